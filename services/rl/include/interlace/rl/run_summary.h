// What a finished `interlace run` reports: summary.json (throughput, held-out
// reward before and after with the paired per-task change, learner/rollout
// mismatch, staleness, cache hit rate) from the learner's metrics rows and
// the evaluations, and the lines printed at the end.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "interlace/rl/evaluation.h"
#include "interlace/rl/job_spec.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct RunFigures {
  std::vector<nlohmann::json> metrics_rows;  // metrics.jsonl
  Evaluations before, after;
  double rl_seconds = 0, total_seconds = 0;
  std::string run_dir, final_model;
};

nlohmann::json run_summary(const JobSpec& spec, const RunFigures& figures);
// When the spec expects the warmed-up model to reach a greedy held-out reward
// (sft.expect_greedy_reward) and the evaluation before RL fell short: a
// sentence saying so (also in the summary's "warnings").
std::optional<std::string> warmup_shortfall(const JobSpec& spec, const Evaluations& before);
// The lines `interlace run` prints (table output), each ending in a newline.
std::string summary_text(const nlohmann::json& summary);

}  // namespace interlace::rl
