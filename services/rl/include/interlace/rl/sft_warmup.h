// A job's SFT warm-up (the `sft` section of a job spec): demonstrations of the
// environment, then `interlace train sft` on them, as child processes. With
// sft.check_every it is a checked warm-up: trained in pieces of that many
// steps, after each the model plays validation tasks greedily, and it stops
// once it solves sft.expect_greedy_reward of them (sft.steps at most). The
// checks go to RUN_DIR/sft-checks.jsonl ({"step", "validation_greedy_reward"}).
// A run resumed mid-warm-up carries on from its last piece.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/rl/job_spec.h"

namespace interlace::rl {

struct WarmupOptions {
  std::string interlace;  // the interlace executable
  bool quiet = false;
  std::function<bool()> interrupted;
};

// Warms up `model` (a directory); returns the warmed-up model's directory,
// RUN_DIR/sft-model (already there: returned as it is).
absl::StatusOr<std::string> run_sft_warmup(const JobSpec& spec, const WarmupOptions& o, const std::string& model,
                                           const std::string& run_dir);

}  // namespace interlace::rl
