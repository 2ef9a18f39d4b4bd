// summarise_study against sums done by hand: means over runs with their
// standard errors, paired differences from the reference on the episodes both
// runs played, and the sets in the table's order.
#include "interlace/rl/study_summary.h"

#include "interlace/rl/study_report.h"

#include <gtest/gtest.h>

#include <cmath>

namespace interlace::rl {
namespace {

using nlohmann::json;

json row(const std::string& variant, int64_t seed, const json& greedy, const json& figures = json::object()) {
  return {{"variant", variant}, {"task", "t"}, {"seed", seed}, {"parameters", 10}, {"sft_steps", 5},
          {"rewards", {{"held-out greedy", greedy}}}, {"figures", figures}};
}

TEST(StudySummary, MeansStandardErrorsAndPairedDifferencesByHand) {
  // full: seed 0 episodes {1, 0, 1, 1} (mean 0.75), seed 1 {0, 0, 1, 0} (0.25).
  // hybrid: seed 0 {1, 1, 1, 1} (1.0), seed 1 {0, 0, 0} on a, b, c and an
  // episode "e" the reference never played (left out of the pairing), so its
  // paired run differences are 1.0 - 0.75 = +0.25 and 0 - 1/3 = -1/3.
  const json table = {
      {"sets", {"held-out greedy", "extra"}},
      {"rows",
       {row("full", 0, {{"a", 1.0}, {"b", 0.0}, {"c", 1.0}, {"d", 1.0}}, {{"speed", 10.0}}),
        row("full", 1, {{"a", 0.0}, {"b", 0.0}, {"c", 1.0}, {"d", 0.0}}, {{"speed", 20.0}}),
        row("hybrid", 0, {{"a", 1.0}, {"b", 1.0}, {"c", 1.0}, {"d", 1.0}}, {{"speed", 5.0}, {"drift", nullptr}}),
        row("hybrid", 1, {{"a", 0.0}, {"b", 0.0}, {"c", 0.0}, {"e", 1.0}}, {{"speed", 7.0}, {"drift", 0.5}})}}};
  const json s = summarise_study(table, "full");
  ASSERT_EQ(s["variants"].size(), 2u);
  EXPECT_EQ(s["sets"], json({"held-out greedy", "extra"}));
  const json& full = s["variants"][0];
  const json& hybrid = s["variants"][1];
  EXPECT_EQ(full["variant"], "full");
  EXPECT_FALSE(full.contains("vs_reference"));
  // Run means 0.75 and 0.25: mean 0.5, sample sd sqrt(0.125), se = sd / sqrt(2) = 0.25.
  EXPECT_DOUBLE_EQ(full["rewards"]["held-out greedy"]["mean"], 0.5);
  EXPECT_NEAR(full["rewards"]["held-out greedy"]["se"].get<double>(), 0.25, 1e-12);
  EXPECT_DOUBLE_EQ(full["rewards"]["held-out greedy"]["min"], 0.25);
  EXPECT_DOUBLE_EQ(full["figures"]["speed"], 15.0);
  // hybrid run means 1.0 and 0.25 (e counts for its own mean): mean 0.625.
  EXPECT_DOUBLE_EQ(hybrid["rewards"]["held-out greedy"]["mean"], 0.625);
  const json& d = hybrid["vs_reference"]["held-out greedy"];
  const double d0 = 0.25, d1 = -1.0 / 3, mean = (d0 + d1) / 2;
  EXPECT_NEAR(d["diff"].get<double>(), mean, 1e-12);
  EXPECT_NEAR(d["se"].get<double>(), std::sqrt(((d0 - mean) * (d0 - mean) + (d1 - mean) * (d1 - mean)) / 1 / 2), 1e-12);
  EXPECT_EQ(d["pairs"], 2);
  EXPECT_EQ(d["higher"], 1);
  EXPECT_EQ(d["lower"], 1);
  EXPECT_EQ(d["episodes"], 7) << "4 paired episodes in seed 0, 3 in seed 1 (e has no partner)";
  // A null figure is left out of the mean, not counted as 0.
  EXPECT_DOUBLE_EQ(hybrid["figures"]["drift"], 0.5);
  EXPECT_DOUBLE_EQ(hybrid["figures"]["speed"], 6.0);
  EXPECT_FALSE(hybrid["rewards"].contains("extra")) << "no run played it";
}

TEST(StudySummary, OneRunHasNoStandardError) {
  const json table = {{"rows", {row("full", 0, {{"a", 1.0}}), row("swa", 0, {{"a", 0.0}})}}};
  const json s = summarise_study(table, "full");
  EXPECT_TRUE(s["variants"][0]["rewards"]["held-out greedy"]["se"].is_null());
  EXPECT_DOUBLE_EQ(s["variants"][1]["vs_reference"]["held-out greedy"]["diff"], -1.0);
  EXPECT_TRUE(s["variants"][1]["vs_reference"]["held-out greedy"]["se"].is_null());
}

// Two training tasks: each set is named after the task that trained the
// model, never pooled across tasks; the report titles evaluation columns by
// what they change and draws reward against it for each task.
TEST(StudySummary, SeveralTasksKeepTheirSetsApartInTheReport) {
  const std::string a = "calculator:max_number=5,notes=0", b = "calculator:max_number=9,notes=0";
  const std::string on_a = kStudyTrainedOn + a, on_b = kStudyTrainedOn + b;
  auto run = [&](const std::string& v, const std::string& task, const std::string& on, int64_t seed, double greedy, double noted) {
    return json{{"variant", v},
                {"task", task},
                {"seed", seed},
                {"run_dir", "/tmp/x/" + v},
                {"rewards", {{"held-out greedy" + on, {{"1:0", greedy}}}, {"calculator:max_number=5,notes=4" + on, {{"1:0", noted}}}}}};
  };
  const json table = {
      {"tasks", {a, b}},
      {"sets", {"held-out greedy" + on_a, "calculator:max_number=5,notes=4" + on_a, "held-out greedy" + on_b,
                "calculator:max_number=5,notes=4" + on_b}},
      {"rows",
       {run("full", a, on_a, 0, 1.0, 0.0), run("full", b, on_b, 0, 0.0, 0.0), run("swa", a, on_a, 0, 1.0, 1.0),
        run("swa", b, on_b, 0, 1.0, 1.0)}}};
  const json s = summarise_study(table, "full");
  const json& full = s["variants"][0];
  EXPECT_DOUBLE_EQ(full["rewards"]["held-out greedy" + on_a]["mean"], 1.0);
  EXPECT_DOUBLE_EQ(full["rewards"]["held-out greedy" + on_b]["mean"], 0.0) << "not pooled with task a";
  EXPECT_DOUBLE_EQ(s["variants"][1]["vs_reference"]["held-out greedy" + on_b]["diff"], 1.0);
  const std::string html = render_study_report(table, s, "/tmp/x");
  EXPECT_NE(html.find(">notes=4 (" + a + ")<"), std::string::npos) << "a column titled by what it changes";
  EXPECT_NE(html.find(">max_number=5,notes=4 (" + b + ")<"), std::string::npos);
  EXPECT_NE(html.find("Greedy reward vs notes (" + a + ")"), std::string::npos) << "a chart per training task";
  EXPECT_EQ(html.find("Greedy reward vs notes (" + b + ")"), std::string::npos) << "two options differ from task b";
  EXPECT_NE(html.find("href='full/report.html'"), std::string::npos);
}

}  // namespace
}  // namespace interlace::rl
