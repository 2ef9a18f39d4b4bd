// Optimizers against a float64 transcription of the update rules (PyTorch's
// AdamW and SGD), on fresh random parameters and gradients: several steps, so
// bias correction, decay and the moments' recurrences are all exercised.
#include "interlace/learner/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "support/random.h"

namespace interlace::learner {
namespace {

using core::Tensor;

model::NamedTensors random_tensors(std::mt19937_64& rng, float stddev) {
  model::NamedTensors t;
  t["a.weight"] = Tensor::from_vector(testing::normal_vector(rng, 12, stddev), {3, 4});
  t["a.norm"] = Tensor::from_vector(testing::normal_vector(rng, 5, stddev), {5});
  return t;
}

std::vector<double> as_double(const Tensor& t) {
  std::vector<double> v(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.f32()[i];
  return v;
}

TEST(Optimizer, AdamWMatchesFloat64UpdateRuleWithDecayClippingAndWarmup) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  OptimizerConfig c;
  c.lr = 0.01;
  c.beta1 = 0.9;
  c.beta2 = 0.95;
  c.eps = 1e-8;
  c.weight_decay = 0.1;
  c.max_grad_norm = 0.5;
  c.warmup_steps = 2;
  model::NamedTensors p = random_tensors(rng, 1.0f);
  std::map<std::string, std::vector<double>> w, m, v;
  for (auto& [name, t] : p) {
    w[name] = as_double(t);
    m[name].assign(t.numel(), 0.0);
    v[name].assign(t.numel(), 0.0);
  }
  Optimizer opt(c, p);
  for (int step = 0; step < 5; ++step) {
    model::NamedTensors g = random_tensors(rng, step == 3 ? 0.01f : 1.0f);  // step 3: not clipped
    model::NamedTensors g_raw;
    for (auto& [n, t] : g) g_raw[n] = t.clone();
    double sq = 0;
    for (auto& [name, t] : g)
      for (float x : t.span_f32()) sq += double(x) * x;
    const double norm = std::sqrt(sq), clip = norm > 0.5 ? 0.5 / (norm + 1e-6) : 1.0;
    const double lr = step < 2 ? 0.01 * (step + 1) / 2 : 0.01;
    const StepReport r = opt.step(p, g, step);
    ASSERT_TRUE(r.applied);
    EXPECT_NEAR(r.grad_norm, norm, 1e-6 * norm);
    EXPECT_EQ(r.clipped, norm > 0.5);
    EXPECT_DOUBLE_EQ(r.lr, lr);
    const int t = step + 1;
    for (auto& [name, tensor] : p) {
      const bool decay = tensor.shape().size() >= 2;
      // The optimizer clips g in place; recompute the clipped gradient from the
      // unclipped copy so a wrong clip factor shows.
      const std::vector<double> graw = [&] {
        std::vector<double> out = as_double(g_raw.at(name));
        for (double& x : out) x *= clip;
        return out;
      }();
      for (int64_t i = 0; i < tensor.numel(); ++i) {
        double& wi = w[name][i];
        if (decay) wi *= 1.0 - lr * 0.1;
        m[name][i] = 0.9 * m[name][i] + 0.1 * graw[i];
        v[name][i] = 0.95 * v[name][i] + 0.05 * graw[i] * graw[i];
        const double mh = m[name][i] / (1 - std::pow(0.9, t)), vh = v[name][i] / (1 - std::pow(0.95, t));
        wi -= lr * mh / (std::sqrt(vh) + 1e-8);
        EXPECT_NEAR(tensor.f32()[i], wi, 2e-6 * std::max(1.0, std::fabs(wi))) << name << "[" << i << "] step " << step;
      }
    }
  }
  EXPECT_EQ(opt.applied_steps(), 5);
}

TEST(Optimizer, ClippingScalesTheGradientToTheMaximumNorm) {
  std::mt19937_64 rng(testing::fresh_seed());
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.lr = 1.0;
  c.max_grad_norm = 0.25;
  model::NamedTensors p = random_tensors(rng, 1.0f), g = random_tensors(rng, 3.0f);
  Optimizer opt(c, p);
  const StepReport r = opt.step(p, g, 0);
  ASSERT_TRUE(r.clipped);
  double sq = 0;
  for (auto& [name, t] : g)
    for (float x : t.span_f32()) sq += double(x) * x;
  EXPECT_NEAR(std::sqrt(sq), 0.25, 1e-5);
}

TEST(Optimizer, SgdIsExactlyWeightMinusLrTimesGradAndDecayIsL2OnMatricesOnly) {
  std::mt19937_64 rng(testing::fresh_seed());
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.lr = 0.3;
  c.max_grad_norm = 0;
  model::NamedTensors p = random_tensors(rng, 1.0f), g = random_tensors(rng, 1.0f);
  model::NamedTensors before;
  for (auto& [n, t] : p) before[n] = t.clone();
  Optimizer opt(c, p);
  opt.step(p, g, 0);
  for (auto& [n, t] : p)
    for (int64_t i = 0; i < t.numel(); ++i)
      EXPECT_EQ(t.f32()[i], before[n].f32()[i] - 0.3f * g.at(n).f32()[i]) << n << i;  // bitwise

  c.weight_decay = 0.5;
  model::NamedTensors q = random_tensors(rng, 1.0f), zero = random_tensors(rng, 0.0f);
  const float w0 = q.at("a.weight").f32()[0], n0 = q.at("a.norm").f32()[0];
  Optimizer decayed(c, q);
  decayed.step(q, zero, 0);
  EXPECT_FLOAT_EQ(q.at("a.weight").f32()[0], w0 * (1 - 0.3f * 0.5f));
  EXPECT_EQ(q.at("a.norm").f32()[0], n0);  // norms are not decayed
}

TEST(Optimizer, NonFiniteGradientsSkipTheStepAndCountIt) {
  std::mt19937_64 rng(testing::fresh_seed());
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    OptimizerConfig c;  // AdamW
    model::NamedTensors p = random_tensors(rng, 1.0f), g = random_tensors(rng, 1.0f);
    model::NamedTensors before;
    for (auto& [n, t] : p) before[n] = t.clone();
    Optimizer opt(c, p);
    g.at("a.norm").f32()[2] = bad;
    const StepReport r = opt.step(p, g, 0);
    EXPECT_FALSE(r.applied);
    EXPECT_EQ(opt.skipped_steps(), 1);
    EXPECT_EQ(opt.applied_steps(), 0);
    for (auto& [n, t] : p)
      for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.f32()[i], before[n].f32()[i]);
    for (auto& [n, t] : opt.state())
      for (float x : t.span_f32()) EXPECT_EQ(x, 0.0f) << "moments must not move on a skipped step";
    // The next good step is the optimizer's first (bias correction of step 1).
    model::NamedTensors good = random_tensors(rng, 1.0f);
    EXPECT_TRUE(opt.step(p, good, 1).applied);
    EXPECT_EQ(opt.applied_steps(), 1);
  }
}

TEST(Optimizer, CosineScheduleAfterWarmup) {
  OptimizerConfig c;
  c.lr = 1.0;
  c.warmup_steps = 4;
  c.schedule = LrSchedule::kCosine;
  c.total_steps = 14;
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(c, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(c, 4), 1.0);
  EXPECT_NEAR(learning_rate(c, 9), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.5)), 1e-12);
  EXPECT_NEAR(learning_rate(c, 14), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(c, 20), 0.1, 1e-12);
  c.schedule = LrSchedule::kConstant;
  EXPECT_DOUBLE_EQ(learning_rate(c, 9), 1.0);
}

TEST(Optimizer, StateRestoresIntoAFreshOptimizerAndContinuesBitwise) {
  std::mt19937_64 rng(testing::fresh_seed());
  OptimizerConfig c;
  model::NamedTensors p1 = random_tensors(rng, 1.0f), p2;
  for (auto& [n, t] : p1) p2[n] = t.clone();
  std::vector<model::NamedTensors> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(random_tensors(rng, 1.0f));
  auto copy = [](const model::NamedTensors& g) {
    model::NamedTensors out;
    for (auto& [n, t] : g) out[n] = t.clone();
    return out;
  };
  Optimizer straight(c, p1), first(c, p2);
  for (int s = 0; s < 3; ++s) {
    model::NamedTensors g = copy(grads[s]);
    straight.step(p1, g, s);
  }
  for (int s = 0; s < 2; ++s) {
    model::NamedTensors g = copy(grads[s]);
    first.step(p2, g, s);
  }
  Optimizer resumed(c, p2);
  ASSERT_TRUE(resumed.restore(first.state(), first.applied_steps(), first.skipped_steps()).ok());
  model::NamedTensors g = copy(grads[2]);
  resumed.step(p2, g, 2);
  for (auto& [n, t] : p2)
    for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.f32()[i], p1.at(n).f32()[i]) << n << "[" << i << "]";

  model::NamedTensors missing = first.state();
  missing.erase(missing.begin());
  Optimizer other(c, p1);
  EXPECT_FALSE(other.restore(missing, 1, 0).ok());
}

}  // namespace
}  // namespace interlace::learner
