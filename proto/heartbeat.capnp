# Heartbeats: each service's liveness and load.
@0xf92fa90e4fccde9d;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

struct Heartbeat {
  service @0 :Text;          # e.g. "worker-0"; informational: the learner names a peer by its CURVE key
  unixMillis @1 :Int64;      # informational: the learner orders heartbeats by its own clock
  weightsVersion @2 :Int64;
  running @3 :UInt32;        # sequences in the engine's batch
  waiting @4 :UInt32;        # requests queued
  cacheHitTokens @5 :UInt64;
  cacheQueryTokens @6 :UInt64;
  cacheBytes @7 :UInt64;
  incarnation @8 :UInt64;    # random per process start: a new value means the worker restarted
  wantTasks @9 :UInt32;      # groups the worker can take now (0: just reporting)
  unacked @10 :UInt32;       # trajectories sent and not yet acknowledged
  weightsId @11 :UInt64;     # the publication the worker runs (see TaskGrant.weightsId)
}
