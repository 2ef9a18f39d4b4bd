// A rollout job's spec (issue 18): episodes of an environment with a model,
// the trajectories kept with the job (`interlace results ID`). Submitted with
// `interlace submit SPEC.yaml --kind rollout`; run by a job runner as
// `interlace rollout`. Errors name the file, line and key, as the job spec's do.
//
//   name: calc-eval
//   model: /models/tiny        # a model directory, or
//   from_job: job-3            # a train job's final model (one of the two)
//   env: "calculator:max_number=5,short_prompt=1"
//   prompts: 64                # tasks
//   group_size: 8              # samples per task
//   eval: false                # true: the environment's fixed held-out tasks
//   temperature: 1.0, top_p: 1.0, top_k: 0, seed: 0
//   max_turns: 4, max_new_tokens: 128, max_episode_tokens: 4096, precision: fp32
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace interlace::rl {

struct RolloutJobSpec {
  std::string name = "rollout";
  std::string model, from_job;  // exactly one
  std::string env = "calculator";
  int64_t prompts = 8, group_size = 1, max_turns = 4, max_new_tokens = 128, max_episode_tokens = 4096, top_k = 0;
  double temperature = 1.0, top_p = 1.0;
  uint64_t seed = 0;
  bool eval = false;
  std::string precision = "fp32";
};

// `source` names the text in errors (a file name, or "spec").
absl::StatusOr<RolloutJobSpec> parse_rollout_job_spec(const std::string& text, const std::string& source);

// The `interlace rollout` command line that runs it with `model_dir`, writing `out`.
std::vector<std::string> rollout_command(const RolloutJobSpec& spec, const std::string& interlace,
                                         const std::string& model_dir, const std::string& out);

}  // namespace interlace::rl
