# Trajectories: what a rollout worker sends the learner, one per episode.
# Fields are only ever added with new ordinals; never renumbered or retyped.
@0x8950bf76a7dd0937;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

# Unique across a job and its restarts: the learner drops duplicates by it.
struct TrajectoryId {
  job @0 :Text;        # the job's name
  group @1 :UInt64;    # sampling group (one task, group-size samples)
  sample @2 :UInt32;   # index within the group
  attempt @3 :UInt32;  # how many times the worker has produced this sample (a restart re-runs it)
}

struct Turn {
  role @0 :Text;      # system | user | assistant | tool
  start @1 :UInt32;   # token range [start, end)
  end @2 :UInt32;
}

struct Trajectory {
  id @0 :TrajectoryId;
  taskSeed @1 :UInt64;          # the environment's task seed
  env @2 :Text;                 # environment spec, e.g. "calculator"
  tokens @3 :List(Int32);       # the whole episode
  logprobs @4 :List(Float32);   # raw model log-probs of generated tokens; NaN elsewhere
  sampledLogprobs @5 :List(Float32);  # log-probs under the sampling distribution; NaN elsewhere
  lossMask @6 :Data;            # one byte per token: 1 = generated (trained on)
  versions @7 :List(Int64);     # weights version per generated token; -1 elsewhere
  turns @8 :List(Turn);
  reward @9 :Float64;
  finishReason @10 :Text;       # done | max_turns | max_turn_tokens | max_episode_tokens | aborted
  cachedTokens @11 :UInt64;     # prompt tokens served from the prefix cache
  worker @12 :Text;             # the worker that produced it
}

# The learner's answer once a trajectory is durable (spooled and fsynced).
struct Ack {
  id @0 :TrajectoryId;
  accepted @1 :Bool;    # false: rejected (malformed, stale beyond eta); do not resend
  reason @2 :Text;      # why, when not accepted
}
