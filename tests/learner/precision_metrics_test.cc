// Mismatch metrics against hand-computed values.
#include "interlace/learner/precision_metrics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace interlace::learner {
namespace {

TEST(MismatchMetrics, HandComputedExample) {
  // Two sequences; the first token of each has no log-prob (NaN) and is skipped.
  const std::vector<float> r1 = {NAN, std::log(0.5f), std::log(0.25f)};
  const std::vector<float> t1 = {NAN, std::log(0.4f), std::log(0.25f)};
  const std::vector<float> r2 = {NAN, std::log(0.8f)};
  const std::vector<float> t2 = {NAN, std::log(0.9f)};
  MismatchAccumulator acc;
  acc.add(r1, t1);
  acc.add(r2, t2);
  MismatchMetrics m = acc.metrics();
  ASSERT_EQ(m.tokens, 3);
  const double d[3] = {std::log(0.4 / 0.5), 0.0, std::log(0.9 / 0.8)};
  EXPECT_NEAR(m.logprob_abs_diff_mean, (std::fabs(d[0]) + std::fabs(d[2])) / 3, 1e-6);
  EXPECT_NEAR(m.logprob_abs_diff_max, std::fabs(d[0]), 1e-6);
  EXPECT_NEAR(m.prob_abs_diff_mean, (0.1 + 0.0 + 0.1) / 3, 1e-6);
  EXPECT_NEAR(m.prob_abs_diff_max, 0.1, 1e-6);
  // k3: r - 1 - log r with r = p_train / p_rollout.
  const double k3 = ((0.8 - 1 - std::log(0.8)) + 0 + (1.125 - 1 - std::log(1.125))) / 3;
  EXPECT_NEAR(m.mismatch_k3_kl, k3, 1e-6);
  EXPECT_NEAR(m.token_mult_prob_error, (1.25 + 1 + 1.125) / 3, 1e-6);
  // Pearson of (0.5, 0.25, 0.8) and (0.4, 0.25, 0.9), computed by hand.
  const double a[3] = {0.5, 0.25, 0.8}, b[3] = {0.4, 0.25, 0.9};
  const double ma = (a[0] + a[1] + a[2]) / 3, mb = (b[0] + b[1] + b[2]) / 3;
  double c = 0, va = 0, vb = 0;
  for (int i = 0; i < 3; ++i) {
    c += (a[i] - ma) * (b[i] - mb);
    va += (a[i] - ma) * (a[i] - ma);
    vb += (b[i] - mb) * (b[i] - mb);
  }
  EXPECT_NEAR(m.prob_pearson, c / std::sqrt(va * vb), 1e-6);
}

TEST(MismatchMetrics, IdenticalLogprobsGiveZeroMismatch) {
  const std::vector<float> r = {NAN, -1.0f, -2.0f, -0.5f};
  MismatchAccumulator acc;
  acc.add(r, r);
  MismatchMetrics m = acc.metrics();
  EXPECT_EQ(m.logprob_abs_diff_max, 0.0);
  EXPECT_EQ(m.mismatch_k3_kl, 0.0);
  EXPECT_NEAR(m.prob_pearson, 1.0, 1e-12);
  EXPECT_EQ(m.token_mult_prob_error, 1.0);
  EXPECT_EQ(to_json(m)["tokens"], 3);
}

}  // namespace
}  // namespace interlace::learner
