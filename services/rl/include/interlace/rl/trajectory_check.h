// What the learner checks of a trajectory before it spools (and acknowledges)
// it. A trajectory that decodes but would break training (a token outside the
// vocabulary once aborted the learner on every restart, because it was already
// in the spool) is refused with a reason the worker logs; one bad message never
// stops a job.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "interlace/rollout/agent.h"

namespace interlace::rl {

struct TrajectoryLimits {
  int64_t vocab_size = 0;
  int64_t group_size = 0;
  int64_t max_tokens = 0;       // the job's max_episode_tokens
  int64_t max_version = 0;      // the newest weights version published; -1: do not check
  bool sampled_logprobs = true;  // the objective corrects against sampled_logprobs (temperature > 0), else logprobs
  double max_abs_reward = 1e6;
};

// OK, or InvalidArgument naming the first field that is wrong and why.
absl::Status check_trajectory(const rollout::Trajectory& t, const TrajectoryLimits& limits);

}  // namespace interlace::rl
