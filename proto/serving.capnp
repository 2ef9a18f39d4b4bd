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
}
