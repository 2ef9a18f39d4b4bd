# Serving (issue 21): the gateway's token-level requests to a serving worker
# and the worker's streamed answers. Same rules as every schema here: fields
# are only added with new ordinals.
@0xbd7d82656ed58755;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

struct ServeRequest {
  union {
    generate @0 :Generate;
    abort @1 :UInt64;        # the id of a request to end now (its client went away)
    hello @2 :Void;          # sent on connecting: the worker answers with a ServeEvent whose hello is set
    cacheSnapshot @3 :Void;  # publish everything the cache holds now on the events socket (a subscriber lost events, or joined)
  }
}

struct Generate {
  id @0 :UInt64;             # the gateway's id; answers carry it back
  prompt @1 :List(Int32);
  temperature @2 :Float32;   # <= 0: greedy
  topP @3 :Float32;
  topK @4 :Int32;
  maxTokens @5 :Int32;
  seed @6 :UInt64;
  stopTokens @7 :List(Int32);
  stopStrings @8 :List(Text);
  topLogprobs @9 :UInt8;     # alternatives per token to return (0..20)
}

struct ServeEvent {
  id @0 :UInt64;
  tokens @1 :List(Int32);      # generated since the previous event of this request
  logprobs @2 :List(Float32);  # log p(token) of each: the model's softmax at temperature 1 (what the learner computes)
  versions @3 :List(Int64);    # the weights version of each
  finished @4 :Bool;
  finishReason @5 :Text;       # with finished: "stop" (token or string), "length", "aborted", "error"
  promptTokens @6 :UInt32;
  cachedTokens @7 :UInt32;     # prompt tokens restored from the worker's prefix/state cache
  error @8 :Text;              # why a request was refused ("error")
  running @9 :UInt32;          # the worker's load when it sent this: sequences decoding
  waiting @10 :UInt32;         #   and requests queued
  hello @11 :WorkerHello;      # set only in the answer to a hello (id 0)
  topTokens @12 :List(Int32);  # with topLogprobs asked: k alternatives per token, most likely first, flattened
  topLogprobs @13 :List(Float32);  # their log-probs, as logprobs
}

struct WorkerHello {
  eventsPort @0 :UInt16;       # the cache events' PUB port, on the host the gateway reached the worker at; 0: no cache
  instance @1 :UInt64;         # random per worker process: the CacheEvents it publishes carry it
}

# Published on the worker's PUB socket (CURVE, the same keys as its requests)
# whenever its prefix/state cache stores or drops a usable prefix: what lets a
# gateway route a request to the worker that can restore its prompt. On a
# hybrid model these are state checkpoints, not blocks: a prefix without a
# state checkpoint restores nothing there.
struct CacheEvents {
  instance @0 :UInt64;
  seq @1 :UInt64;              # 1, 2, ... per instance for changes; a gap means messages were lost (PUB drops when a subscriber lags)
  snapshot @2 :Bool;           # entries are everything held as of change seq (all stored): the answer to cacheSnapshot
  entries @3 :List(CacheEntry);
}

struct CacheEntry {
  hash @0 :UInt64;             # of the prefix's tokens (cache/prefix_hash.h)
  length @1 :UInt32;           # tokens
  version @2 :Int64;           # weights version it was computed under
  stored @3 :Bool;             # false: dropped (evicted, or its version's tree went)
}
