# Heartbeats: each service's liveness and load.
@0xf92fa90e4fccde9d;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

struct Heartbeat {
  service @0 :Text;          # e.g. "rollout-worker-0"
  unixMillis @1 :Int64;
  weightsVersion @2 :Int64;
  running @3 :UInt32;        # sequences in the engine's batch
  waiting @4 :UInt32;        # requests queued
  cacheHitTokens @5 :UInt64;
  cacheQueryTokens @6 :UInt64;
  cacheBytes @7 :UInt64;
}
