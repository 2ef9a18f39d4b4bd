# Tasks: what a worker is asked to run.
@0xb6faac6dd9cf334e;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

struct Sampling {
  temperature @0 :Float32 = 1.0;
  topP @1 :Float32 = 1.0;
  topK @2 :UInt32;           # 0: no limit
  seed @3 :UInt64;
  maxTurns @4 :UInt32 = 4;
  maxTurnTokens @5 :UInt32 = 128;
  maxEpisodeTokens @6 :UInt32 = 4096;
}

struct Task {
  job @0 :Text;
  group @1 :UInt64;        # becomes TrajectoryId.group
  env @2 :Text;            # environment spec
  taskSeed @3 :UInt64;
  groupSize @4 :UInt32;    # samples to run, sharing the prompt's cache entry
  sampling @5 :Sampling;
  attempt @6 :UInt32;      # re-issued after a worker died: bump so ids stay unique
  weightsVersion @7 :Int64;  # run with at least this weights version (synchronous mode)
}

# The learner's answer to a worker's heartbeat: work to do and the weights to
# use. Sent on the tasks port.
struct TaskGrant {
  tasks @0 :List(Task);
  weightsVersion @1 :Int64;  # the newest published weights
  weightsId @2 :UInt64;      # identifies that publication (changes when a restarted learner republishes)
  jobDone @3 :Bool;          # the job is finished: the worker exits
}
