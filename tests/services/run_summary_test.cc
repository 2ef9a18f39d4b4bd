// What a finished run reports, from metrics rows and evaluations made up
// here: totals, rates, the paired before/after change, and the printed lines.
#include "interlace/rl/run_summary.h"

#include <gtest/gtest.h>

#include <random>

namespace interlace::rl {
namespace {

Evaluation evaluation(const std::vector<double>& rewards_by_task) {
  Evaluation e;
  double sum = 0;
  for (size_t t = 0; t < rewards_by_task.size(); ++t) {
    e.rows.push_back({{"task_seed", 100 + t}, {"reward", rewards_by_task[t]}});
    sum += rewards_by_task[t];
  }
  e.episodes = static_cast<int64_t>(e.rows.size());
  e.ran = e.episodes > 0;
  e.mean_reward = sum / double(e.episodes);
  return e;
}

TEST(RunSummary, AddsUpTheStepsAndComparesTheEvaluationsTaskByTask) {
  std::mt19937_64 rng(std::random_device{}());
  JobSpec spec;
  spec.name = "calc";
  spec.temperature = 0.8;
  RunFigures f;
  const int steps = 2 + int(rng() % 5);
  int64_t trajectories = 0, tokens = 0;
  for (int s = 1; s <= steps; ++s) {
    const int64_t t = 8 + int64_t(rng() % 8), n = 100 + int64_t(rng() % 100);
    trajectories += t;
    tokens += n;
    f.metrics_rows.push_back({{"step", s},
                              {"trajectories", t},
                              {"generated_tokens", n},
                              {"stale_dropped", 1},
                              {"staleness_mean", 0.5},
                              {"mismatch", {{"logprob_abs_diff_mean", 1e-3}}},
                              {"cache_hit_rate", 0.1 * s}});
  }
  f.before.greedy = evaluation({0, 0, 1, 0});
  f.after.greedy = evaluation({1, 0, 1, 1});
  f.rl_seconds = 10;
  f.total_seconds = 12;
  f.run_dir = "/runs/calc";
  const nlohmann::json s = run_summary(spec, f);
  EXPECT_EQ(s["steps"], steps);
  EXPECT_EQ(s["trajectories_trained"], trajectories);
  EXPECT_EQ(s["trajectories_stale_dropped"], steps);
  EXPECT_DOUBLE_EQ(s["tokens_per_second"].get<double>(), double(tokens) / 10);
  EXPECT_DOUBLE_EQ(s["cache_hit_rate"].get<double>(), 0.1 * steps) << "the last step's";
  EXPECT_DOUBLE_EQ(s["eval_reward_before"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(s["eval_reward_after"].get<double>(), 0.75);
  EXPECT_EQ(s["eval_change"]["tasks"], 4);
  EXPECT_DOUBLE_EQ(s["eval_change"]["mean"].get<double>(), 0.5);
  // Differences 1, 0, 0, 1: sample sd 0.57735, / sqrt(4).
  EXPECT_NEAR(s["eval_change"]["standard_error"].get<double>(), 0.288675, 1e-6);
  EXPECT_TRUE(s["eval_sampled_reward_before"].is_null()) << "no sampled evaluation ran";
  EXPECT_TRUE(s["eval_sampled_change"].is_null());

  const std::string text = summary_text(s);
  EXPECT_NE(text.find("held-out reward (4 greedy episodes): 0.250 before -> 0.750 after (per task +0.500, "
                      "standard error 0.289 over 4 tasks)"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("sampled at temperature"), std::string::npos) << text;
  EXPECT_NE(text.find("run directory: /runs/calc"), std::string::npos) << text;
  EXPECT_EQ(text.find("warning"), std::string::npos) << "no SFT level expected: " << text;
}

TEST(RunSummary, SaysPlainlyWhenTheWarmUpFellShortOfTheExpectedLevel) {
  JobSpec spec;
  spec.sft = true;
  spec.sft_expect_greedy_reward = 0.8;
  RunFigures f;
  f.before.greedy = evaluation({0, 1, 0, 0, 0, 0});
  f.after.greedy = evaluation({0, 1, 1, 0, 0, 0});
  nlohmann::json s = run_summary(spec, f);
  ASSERT_EQ(s["warnings"].size(), 1u) << s.dump();
  const std::string text = summary_text(s);
  EXPECT_NE(text.find("warning: the SFT model solves 17% of 6 held-out tasks greedily, below the 80% this job expects"),
            std::string::npos)
      << text;

  f.before.greedy = evaluation({1, 1, 1, 1, 0});  // 80%: at the level
  EXPECT_TRUE(run_summary(spec, f)["warnings"].empty());
  EXPECT_FALSE(warmup_shortfall(spec, f.before));
  spec.sft_expect_greedy_reward = 0;
  f.before.greedy = evaluation({0, 0});
  EXPECT_FALSE(warmup_shortfall(spec, f.before)) << "0: not checked";
}

}  // namespace
}  // namespace interlace::rl
