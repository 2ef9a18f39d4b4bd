// Held-out evaluation of a model, as `interlace run` does it before and after
// RL: the environment's eval tasks, one greedy episode each, then (if the
// spec asks) eval_samples episodes each at the rollout temperature. Each runs
// as `interlace rollout --eval` (a child process) and its episodes are kept in
// RUN_DIR/STEM.jsonl and RUN_DIR/STEM-sampled.jsonl; a file already there is
// read instead of running again (a resumed run does not evaluate twice).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "interlace/rl/job_spec.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct Evaluation {
  bool ran = false;
  double mean_reward = NAN;
  int64_t episodes = 0;
  std::vector<nlohmann::json> rows;  // the episodes, for the paired before/after comparison
};

struct Evaluations {
  Evaluation greedy, sampled;
};

// `interlace`: the interlace executable; `which` names the model in the
// progress line ("starting", "final").
Evaluations evaluate_model(const JobSpec& spec, const std::string& interlace, const std::string& model_dir,
                           const std::string& run_dir, const std::string& stem, const char* which, bool quiet);

}  // namespace interlace::rl
