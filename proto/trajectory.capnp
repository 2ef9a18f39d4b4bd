# Trajectories: what a rollout worker sends the learner, one per episode.
# Fields are only ever added with new ordinals; never renumbered or retyped.
@0x8950bf76a7dd0937;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

# Unique across a job and its restarts. The learner drops duplicates by
# (group, sample): a resend, or another attempt's copy of a sample it has, is
# acknowledged (accepted) and dropped. See docs/wire-protocol.md.
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
  worker @12 :Text;             # the worker that produced it (informational: its CURVE key names it)
}

# The learner's answer to every trajectory it can decode (a frame that does
# not decode gets none: its id cannot be read).
struct Ack {
  id @0 :TrajectoryId;
  # true: durable on the learner (spooled and fdatasync'ed), or a duplicate of
  # one that is; it may still be dropped later as stale, never trained twice.
  # false: refused for good (another job, a group never issued, content that
  # would break training, too many unfinished groups): do not resend.
  accepted @1 :Bool;
  reason @2 :Text;      # why, when not accepted
}
