// Paired before/after comparison of held-out evaluations.
#include "interlace/rl/eval_compare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace interlace::rl {
namespace {

using nlohmann::json;

json row(int64_t task, double reward) { return json{{"task_seed", task}, {"reward", reward}, {"tokens", {1, 2}}}; }

TEST(PairedRewardDifference, MatchesTasksBySeedAndLeavesOutUnmatchedOnes) {
  // Task 1: 0.5 -> 1.0, task 2: 0 -> 0.5, task 5: 1 -> 0.5; task 3 only
  // before, task 4 only after. Differences 0.5, 0.5, -0.5: mean 1/6, sample
  // variance ((1/3)^2 + (1/3)^2 + (2/3)^2) / 2 = 1/3, standard error
  // sqrt(1/3) / sqrt(3) = 1/3.
  const std::vector<json> before = {row(1, 1), row(2, 0), row(1, 0), row(3, 1), row(5, 1), row(2, 0), row(5, 1)};
  const std::vector<json> after = {row(2, 1), row(1, 1), row(4, 0), row(5, 0), row(1, 1), row(2, 0), row(5, 1)};
  auto d = paired_reward_difference(before, after);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->tasks, 3);
  EXPECT_NEAR(d->mean, 1.0 / 6, 1e-12);
  EXPECT_NEAR(d->standard_error, 1.0 / 3, 1e-12);
}

TEST(PairedRewardDifference, AgreesWithTheTextbookFormulaOnRandomEvaluations) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int> samples(1, 8);
  std::bernoulli_distribution p_before(0.6), p_after(0.7);
  std::vector<json> before, after;
  long double sum = 0, sum_sq = 0;
  const int tasks = 40;
  for (int t = 0; t < tasks; ++t) {
    const int64_t seed = 1000 + 7 * t;
    const int n = samples(rng);
    long double b = 0, a = 0;
    for (int i = 0; i < n; ++i) {
      const double rb = p_before(rng), ra = p_after(rng);
      before.push_back(row(seed, rb));
      after.push_back(row(seed, ra));
      b += rb;
      a += ra;
    }
    const long double diff = (a - b) / n;
    sum += diff;
    sum_sq += diff * diff;
  }
  std::shuffle(before.begin(), before.end(), rng);
  std::shuffle(after.begin(), after.end(), rng);
  const long double mean = sum / tasks;
  const long double se = std::sqrt((sum_sq - tasks * mean * mean) / (tasks - 1) / tasks);
  auto d = paired_reward_difference(before, after);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->tasks, tasks);
  EXPECT_NEAR(d->mean, double(mean), 1e-12);
  EXPECT_NEAR(d->standard_error, double(se), 1e-12);
}

TEST(PairedRewardDifference, OneTaskHasNoStandardErrorAndNoneHasNoMean) {
  auto one = paired_reward_difference({row(1, 0)}, {row(1, 1)});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->tasks, 1);
  EXPECT_EQ(one->mean, 1.0);
  EXPECT_TRUE(std::isnan(one->standard_error));
  auto none = paired_reward_difference({row(1, 0)}, {row(2, 1)});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->tasks, 0);
}

TEST(PairedRewardDifference, ARowWithoutTaskOrRewardIsAnErrorNamingIt) {
  auto d = paired_reward_difference({row(1, 0), json{{"reward", 1.0}}}, {row(1, 1)});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), "before evaluation, row 2: needs a numeric task_seed and reward");
  d = paired_reward_difference({row(1, 0)}, {row(1, 1), json{{"task_seed", 1}, {"reward", "high"}}});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), "after evaluation, row 2: needs a numeric task_seed and reward");
}

}  // namespace
}  // namespace interlace::rl
