// The run report: the result is stated first with the numbers of summary.json
// (formatted: durations, percentages, units), every chart overlays one series
// per run, a run still going is reported from its metrics, and the page is
// self-contained (no scripts, no external references).
#include "interlace/rl/report.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include "support/random.h"
#include "support/temp_dir.h"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A run directory with the files a finished run leaves (random figures).
std::string make_run(const std::string& dir, const std::string& name, std::mt19937_64& rng, bool finished, int steps) {
  fs::create_directories(dir);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::ofstream(dir + "/config.json") << json({{"name", name}, {"sft", {{"enabled", true}, {"steps", 700}}}}).dump();
  std::ofstream rows(dir + "/metrics.jsonl");
  for (int s = 1; s <= steps; ++s)
    rows << json({{"step", s}, {"reward", u(rng)}, {"loss", u(rng) - 0.5}, {"kl", 1e-4 * std::pow(10.0, 3 * u(rng))},
                  {"mismatch", {{"logprob_abs_diff_mean", 1e-3 * u(rng)}}}, {"cache_hit_rate", u(rng)}})
                .dump()
         << "\n";
  if (finished) {
    const json summary = {{"eval_reward_before", 0.25 + 0.5 * u(rng)},
                          {"eval_reward_after", 0.25 + 0.5 * u(rng)},
                          {"eval_sampled_reward_before", 0.25 + 0.5 * u(rng)},
                          {"eval_sampled_reward_after", 0.25 + 0.5 * u(rng)},
                          {"eval_change", {{"mean", 0.01}, {"standard_error", 0.04}, {"tasks", 64}}},
                          {"eval_sampled_change", {{"mean", 0.3 * u(rng) + 0.1}, {"standard_error", 0.02}, {"tasks", 64}}},
                          {"eval_episodes", 64},
                          {"eval_sampled_episodes", 512},
                          {"eval_sampled_temperature", 1.0},
                          {"total_seconds", 761.0},
                          {"rl_seconds", 212.4},
                          {"tokens_per_second", 1097.17},
                          {"cache_hit_rate", 0.7451067},
                          {"steps", steps},
                          {"sft_steps_taken", 500},
                          {"warnings", {"the SFT model solves 67% of 64 held-out tasks greedily"}},
                          {"phase_seconds", {{{"phase", "model init"}, {"seconds", 0.5}},
                                             {{"phase", "SFT warm-up"}, {"seconds", 480.0}},
                                             {{"phase", "RL"}, {"seconds", 212.4}}}}};
    std::ofstream(dir + "/summary.json") << summary.dump();
  }
  return dir;
}

std::string fmt3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

TEST(Report, StatesTheResultFirstWithTheSummarysNumbersAndOverlaysRuns) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir d;
  auto a = load_report_run(make_run(d.path() + "/a", "job-a", rng, true, 30));
  auto b = load_report_run(make_run(d.path() + "/b", "job-b", rng, true, 20));
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string one = render_report({*a});
  const json& s = a->summary;
  // The headline sentence carries the before/after and the change from summary.json.
  const std::string sampled = fmt3(s["eval_sampled_reward_before"]) + " &rarr; " + fmt3(s["eval_sampled_reward_after"]);
  const size_t headline = one.find("<p class='headline'>Sampled held-out reward");
  ASSERT_NE(headline, std::string::npos) << "no sampled headline";
  EXPECT_LT(headline, one.find("<h2>Figures</h2>")) << "the result is not first";
  EXPECT_NE(one.find(sampled, headline), std::string::npos) << sampled;
  char change[64];
  std::snprintf(change, sizeof change, "a change of <b>%+.3f</b> per task", s["eval_sampled_change"]["mean"].get<double>());
  EXPECT_NE(one.find(change), std::string::npos) << change;
  EXPECT_NE(one.find("RL raised it</b>, more than the draw"), std::string::npos);
  EXPECT_NE(one.find("(standard error 0.040, 0.2 standard errors over 64 tasks): within the draw"), std::string::npos)
      << "the greedy change of 0.25 se is within the draw";
  EXPECT_NE(one.find("class='warning'>the SFT model solves 67%"), std::string::npos);
  // Figures for people.
  for (const std::string want : {"12m41s", "3m32s", "1,097 tok/s", "74.5%", ">500<"})
    EXPECT_NE(one.find(want), std::string::npos) << want;
  const std::string shown = one.substr(0, one.find("<h2>Files and spec</h2>"));
  EXPECT_EQ(shown.find("0.7451067"), std::string::npos) << "a raw value leaked into the figures";
  EXPECT_NE(one.find("aria-label='time by phase'"), std::string::npos);
  EXPECT_NE(one.find("<title>SFT warm-up: 8m00s</title>"), std::string::npos);
  EXPECT_NE(one.find("KL to the starting model (k3, per token)"), std::string::npos);
  EXPECT_NE(one.find("(log scale)"), std::string::npos) << "the KL spans three decades";
  EXPECT_NE(one.find("<title>job-a: step 7: "), std::string::npos) << "no hover values";
  EXPECT_NE(one.find("<a href='summary.json'>"), std::string::npos);
  EXPECT_NE(one.find("<details><summary>the resolved job spec"), std::string::npos);
  EXPECT_EQ(one.find("<script"), std::string::npos);
  EXPECT_EQ(one.find("src="), std::string::npos) << "an external reference";
  EXPECT_EQ(one.find("href='http"), std::string::npos) << "an external reference";
  EXPECT_EQ(one.find("<link"), std::string::npos) << "an external reference";
  // Two runs: every chart over steps has one averaged series per run.
  const std::string two = render_report({*a, *b}, d.path());
  std::regex chart("<svg[^>]*class='chart'[^>]*aria-label='([^']*)'.*?</svg>");
  int charts = 0;
  for (auto it = std::sregex_iterator(two.begin(), two.end(), chart); it != std::sregex_iterator(); ++it) {
    const std::string svg = it->str();
    if (svg.find("RL step") == std::string::npos) continue;
    ++charts;
    size_t n = 0;
    for (size_t at = svg.find("class='average'"); at != std::string::npos; at = svg.find("class='average'", at + 1)) ++n;
    const bool has_data = svg.find("no data yet") == std::string::npos;
    EXPECT_EQ(n, has_data ? 2u : 0u) << (*it)[1];
  }
  EXPECT_EQ(charts, 5) << "reward, loss, KL, mismatch and cache hit rate have data";
  EXPECT_NE(two.find("<a href='a/summary.json'>"), std::string::npos) << "links are relative to where the report is";
  EXPECT_NE(two.find(">job-b</th>"), std::string::npos);
}

TEST(Report, ARunStillGoingIsReportedFromItsMetrics) {
  std::mt19937_64 rng(testing::fresh_seed());
  test::TempDir d;
  auto r = load_report_run(make_run(d.path() + "/r", "live", rng, false, 4));
  ASSERT_TRUE(r.ok());
  const std::string html = render_report({*r});
  EXPECT_NE(html.find("Still running (or stopped early): 4 RL steps so far"), std::string::npos);
  EXPECT_TRUE(absl::IsNotFound(load_report_run(d.path()).status())) << "an empty directory is no run";
}

}  // namespace
}  // namespace interlace::rl
