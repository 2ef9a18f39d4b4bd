// Before/after comparison of held-out evaluations. `interlace run` evaluates
// the same tasks with the same sampling seeds before and after RL, so the
// per-task change is a paired difference: its standard error (across tasks)
// says whether a rise is more than the draw of tasks and samples.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct PairedDifference {
  int64_t tasks = 0;            // tasks present in both evaluations
  double mean = 0;              // mean over tasks of (mean reward after - mean reward before)
  double standard_error = 0;    // sample standard deviation of those differences / sqrt(tasks); NaN below 2 tasks
};

// Rows are trajectories as `interlace rollout` writes them; a task is a
// `task_seed`, and its reward the mean of its rows' `reward`. Tasks only one
// side holds are left out. A row without a numeric task_seed or reward is an
// error naming the side and the row.
absl::StatusOr<PairedDifference> paired_reward_difference(const std::vector<nlohmann::json>& before,
                                                          const std::vector<nlohmann::json>& after);

}  // namespace interlace::rl
