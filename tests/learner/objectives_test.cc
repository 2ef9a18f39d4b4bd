// RL objectives: advantages and per-token coefficients against small examples
// worked out by hand, rollout correction (TIS truncation, MIS masking and the
// fractions reported), and the whole-model gradient of the PPO and GSPO
// surrogates (with a KL term) against finite differences of the float64
// reference model.
#include "interlace/learner/objectives.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/reference_model.h"
#include "model/test_configs.h"
#include "support/random.h"

namespace interlace::learner {
namespace {

TEST(Advantages, GrpoRlooAndReinforceByHand) {
  const std::vector<std::vector<double>> groups = {{1, 0, 0, 1}, {1, 1, 1, 0}, {0.5}};
  AdvantageConfig c;
  auto a = compute_advantages(groups, c);
  // Group 0: mean 0.5, sample std sqrt(1/3) = 0.57735: +-0.5 / 0.57735 = +-0.866025.
  EXPECT_NEAR(a[0][0], 0.8660254, 1e-5);
  EXPECT_NEAR(a[0][1], -0.8660254, 1e-5);
  // Group 1: mean 0.75, std 0.5: (1 - 0.75) / 0.5 = 0.5, (0 - 0.75) / 0.5 = -1.5.
  EXPECT_NEAR(a[1][0], 0.5, 1e-5);
  EXPECT_NEAR(a[1][3], -1.5, 1e-5);
  EXPECT_EQ(a[2][0], 0.0);  // a group of one carries no signal
  c.normalize_std = false;
  a = compute_advantages(groups, c);
  EXPECT_DOUBLE_EQ(a[1][3], -0.75);
  c.estimator = AdvantageEstimator::kRloo;
  a = compute_advantages(groups, c);
  EXPECT_NEAR(a[0][0], 1 - 1.0 / 3, 1e-12);   // 1 - mean(0, 0, 1)
  EXPECT_NEAR(a[1][3], 0 - 1.0, 1e-12);       // 0 - mean(1, 1, 1)
  EXPECT_NEAR(a[1][0], 1 - 2.0 / 3, 1e-12);   // 1 - mean(1, 1, 0)
  c.estimator = AdvantageEstimator::kReinforce;
  a = compute_advantages(groups, c);
  const double mean = (2 + 3 + 0.5) / 9.0;
  EXPECT_NEAR(a[0][1], -mean, 1e-12);
  EXPECT_NEAR(a[2][0], 0.5 - mean, 1e-12);
}

// A sample of 4 tokens, tokens 1..3 trained, whose current and old
// probabilities are chosen so the ratios are 1.2, 0.7 and 1.0.
PolicySample hand_sample(double advantage) {
  PolicySample s;
  s.tokens = {1, 2, 3, 4};
  s.loss_mask = {0, 1, 1, 1};
  s.advantage = advantage;
  s.old_logprobs = {NAN, static_cast<float>(std::log(0.5)), static_cast<float>(std::log(0.4)),
                    static_cast<float>(std::log(0.3))};
  return s;
}
const std::vector<float> kCurrent = {NAN, static_cast<float>(std::log(0.6)), static_cast<float>(std::log(0.28)),
                                     static_cast<float>(std::log(0.3))};

TEST(PolicyObjective, PpoClipsOnTheAdvantagesSideWithSeparateLowAndHighBounds) {
  ObjectiveConfig c;  // ppo, eps 0.2/0.2, token-mean
  const BatchShape one{1, 3};
  ObjectiveStats st;
  auto k = policy_coefficients(c, hand_sample(2.0), kCurrent, one, &st);
  // A > 0: r = 1.2 <= 1.2 keeps its gradient r*A/3 = 0.8; r = 0.7 too (only the
  // upper bound binds for A > 0): 0.7*2/3; r = 1: 2/3.
  EXPECT_NEAR(k[1], 1.2 * 2 / 3, 1e-6);
  EXPECT_NEAR(k[2], 0.7 * 2 / 3, 1e-6);
  EXPECT_NEAR(k[3], 2.0 / 3, 1e-6);
  EXPECT_EQ(k[0], 0.0f);
  EXPECT_EQ(st.clipped, 0);
  // Loss: -(1.2*2 + 0.7*2 + 1*2) / 3.
  EXPECT_NEAR(st.loss, -(2.4 + 1.4 + 2.0) / 3, 1e-6);
  // eps_high 0.1: r = 1.2 is clipped for A > 0 (gradient 0, loss uses 1.1).
  c.eps_high = 0.1;
  st = {};
  k = policy_coefficients(c, hand_sample(2.0), kCurrent, one, &st);
  EXPECT_EQ(k[1], 0.0f);
  EXPECT_EQ(st.clipped, 1);
  EXPECT_NEAR(st.loss, -(1.1 * 2 + 1.4 + 2.0) / 3, 1e-6);
  // A < 0: the lower bound binds: r = 0.7 < 0.8 is clipped, r = 1.2 keeps r*A.
  st = {};
  k = policy_coefficients(c, hand_sample(-1.0), kCurrent, one, &st);
  EXPECT_NEAR(k[1], 1.2 * -1 / 3, 1e-6);
  EXPECT_EQ(k[2], 0.0f);
  EXPECT_EQ(st.clipped, 1);
  EXPECT_NEAR(st.loss, -(-1.2 - 0.8 - 1.0) / 3, 1e-6);
}

TEST(PolicyObjective, CispoKeepsEveryTokensGradientWithAClippedStopGradientWeight) {
  ObjectiveConfig c;
  c.loss = PolicyLoss::kCispo;
  c.eps_low = 0.1;
  c.eps_high = 0.1;
  ObjectiveStats st;
  auto k = policy_coefficients(c, hand_sample(2.0), kCurrent, {1, 3}, &st);
  // sg(clip(r)) * A / 3 with r clipped to [0.9, 1.1]: 1.1, 0.9, 1.0.
  EXPECT_NEAR(k[1], 1.1 * 2 / 3, 1e-6);
  EXPECT_NEAR(k[2], 0.9 * 2 / 3, 1e-6);
  EXPECT_NEAR(k[3], 1.0 * 2 / 3, 1e-6);
  EXPECT_EQ(st.clipped, 2);
  EXPECT_NEAR(st.loss, -(1.1 * 2 * std::log(0.6) + 0.9 * 2 * std::log(0.28) + 2 * std::log(0.3)) / 3, 1e-5);
}

TEST(PolicyObjective, GspoUsesTheSequenceRatio) {
  ObjectiveConfig c;
  c.loss = PolicyLoss::kGspo;
  c.eps_low = c.eps_high = 0.2;
  ObjectiveStats st;
  // s = exp(mean(log 1.2, log 0.7, 0)) = (1.2 * 0.7)^(1/3) = 0.94354; two sequences in the batch.
  const double s = std::cbrt(1.2 * 0.7);
  auto k = policy_coefficients(c, hand_sample(2.0), kCurrent, {2, 6}, &st);
  for (int t = 1; t <= 3; ++t) EXPECT_NEAR(k[t], s * 2 / 3 / 2, 1e-6) << t;
  EXPECT_NEAR(st.loss, -s * 2 / 2, 1e-6);
  c.eps_high = 0.01;
  c.eps_low = 0.01;  // s < 0.99 with A < 0: clipped, no gradient
  st = {};
  k = policy_coefficients(c, hand_sample(-1.0), kCurrent, {2, 6}, &st);
  for (int t = 1; t <= 3; ++t) EXPECT_EQ(k[t], 0.0f);
  EXPECT_EQ(st.clipped, 3);
}

TEST(PolicyObjective, AggregationModes) {
  ObjectiveConfig c;
  PolicySample s = hand_sample(1.0);
  s.old_logprobs.clear();  // on-policy: r = 1, coefficient = A * alpha
  const BatchShape shape{4, 10};  // 4 sequences, 10 trained tokens in the batch
  EXPECT_NEAR(policy_coefficients(c, s, kCurrent, shape, nullptr)[1], 1.0 / 10, 1e-7);
  c.aggregation = Aggregation::kSeqMeanTokenSum;
  EXPECT_NEAR(policy_coefficients(c, s, kCurrent, shape, nullptr)[1], 1.0 / 4, 1e-7);
  c.aggregation = Aggregation::kSeqMeanTokenMean;
  EXPECT_NEAR(policy_coefficients(c, s, kCurrent, shape, nullptr)[1], 1.0 / (4 * 3), 1e-7);
}

TEST(PolicyObjective, KlPenaltyK3AndItsGradient) {
  ObjectiveConfig c;
  c.kl_coef = 0.5;
  PolicySample s = hand_sample(0.0);  // no policy-gradient term
  s.old_logprobs.clear();
  s.ref_logprobs = {NAN, static_cast<float>(std::log(0.3)), static_cast<float>(std::log(0.28)),
                    static_cast<float>(std::log(0.6))};
  ObjectiveStats st;
  auto k = policy_coefficients(c, s, kCurrent, {1, 3}, &st);
  // d = log(ref/pi): log(0.5), 0, log 2. k3 = e^d - d - 1; coefficient = beta (e^d - 1) / 3.
  EXPECT_NEAR(k[1], 0.5 * (0.5 - 1) / 3, 1e-6);
  EXPECT_NEAR(k[2], 0.0, 1e-7);
  EXPECT_NEAR(k[3], 0.5 * (2 - 1) / 3, 1e-6);
  const double k3 = (0.5 - std::log(0.5) - 1) + (2 - std::log(2.0) - 1);
  EXPECT_NEAR(st.kl, k3 / 3, 1e-6);
  EXPECT_NEAR(st.loss, 0.5 * k3 / 3, 1e-6);
}

// A token the policy made far less likely than the reference (d = log(ref/pi)
// above 3) pulls with the bounded slope e^3 - 1, not e^d; the value goes on
// along the tangent, so it stays the integral of that pull.
TEST(PolicyObjective, KlPullIsBoundedWhereThePolicyLeftTheReferenceFarBehind) {
  ObjectiveConfig c;
  c.kl_coef = 0.5;
  PolicySample s = hand_sample(0.0);
  s.old_logprobs.clear();
  // kCurrent's probabilities at tokens 1..3 are 0.6, 0.28, 0.3; the reference
  // makes them e^10, e^3 and e^2.9 times likelier (log-ratios 10, 3, 2.9).
  const double d[] = {10.0, 3.0, 2.9};
  const double pi[] = {0.6, 0.28, 0.3};
  s.ref_logprobs = {NAN};
  for (int i = 0; i < 3; ++i) s.ref_logprobs.push_back(static_cast<float>(std::log(pi[i]) + d[i]));
  ObjectiveStats st;
  auto k = policy_coefficients(c, s, kCurrent, {1, 3}, &st);
  const double slope = std::exp(3.0) - 1;
  EXPECT_NEAR(k[1], 0.5 * slope / 3, 1e-4);
  EXPECT_NEAR(k[2], 0.5 * slope / 3, 1e-4);
  EXPECT_NEAR(k[3], 0.5 * (std::exp(2.9) - 1) / 3, 1e-4);
  auto k3 = [](double x) { return std::exp(x) - x - 1; };
  EXPECT_NEAR(st.kl, (k3(3.0) + slope * 7 + k3(3.0) + k3(2.9)) / 3, 1e-3);
}

TEST(RolloutCorrection, TisTruncatesAndMisMasksAndBothReportTheFraction) {
  ObjectiveConfig c;
  c.eps_low = c.eps_high = 10;  // no PPO clipping in the way
  c.correction_cap = 2.0;
  PolicySample s = hand_sample(1.0);
  // pi_old / pi_rollout: 0.5/0.1 = 5 (above C), 0.4/0.5 = 0.8 (inside), 0.3/0.9 = 1/3 (below 1/C).
  s.rollout_logprobs = {NAN, static_cast<float>(std::log(0.1)), static_cast<float>(std::log(0.5)),
                        static_cast<float>(std::log(0.9))};
  c.correction = RolloutCorrection::kTis;
  ObjectiveStats st;
  auto k = policy_coefficients(c, s, kCurrent, {1, 3}, &st);
  EXPECT_NEAR(k[1], 2.0 * 1.2 / 3, 1e-6);      // weight truncated to C = 2
  EXPECT_NEAR(k[2], 0.8 * 0.7 / 3, 1e-6);      // weight 0.8 kept
  EXPECT_NEAR(k[3], (1.0 / 3) * 1.0 / 3, 1e-6);  // TIS only truncates from above
  EXPECT_EQ(st.corrected, 1);
  EXPECT_NEAR(st.correction_fraction(), 1.0 / 3, 1e-12);
  c.correction = RolloutCorrection::kMis;
  st = {};
  k = policy_coefficients(c, s, kCurrent, {1, 3}, &st);
  EXPECT_EQ(k[1], 0.0f);  // 5 > C: masked
  EXPECT_NEAR(k[2], 0.7 / 3, 1e-6);  // inside [1/C, C]: unweighted
  EXPECT_EQ(k[3], 0.0f);  // 1/3 < 1/C: masked
  EXPECT_EQ(st.corrected, 2);
  EXPECT_FALSE(validate_sample(c, hand_sample(1.0), 64).ok()) << "MIS needs rollout log-probs";
  EXPECT_TRUE(validate_sample(c, s, 64).ok());
}

// The whole-model gradient of a surrogate equals finite differences of the
// same surrogate computed from the float64 reference model's log-probs.
struct Case {
  std::string name;
  PolicyLoss loss;
};
class SurrogateGradient : public ::testing::TestWithParam<Case> {};

TEST_P(SurrogateGradient, MatchesFiniteDifferencesOfFloat64Reference) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const model::ModelConfig config = testing::parse_or_die(testing::qwen3_json());
  model::NamedTensors w = model::random_weights(config, seed, 0.3f);
  ObjectiveConfig c;
  c.loss = GetParam().loss;
  c.eps_low = 0.2;
  c.eps_high = 0.28;
  c.kl_coef = 0.1;
  c.aggregation = Aggregation::kSeqMeanTokenMean;
  std::vector<PolicySample> samples(2);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
  std::normal_distribution<double> noise(0.0, 0.3);
  for (size_t i = 0; i < samples.size(); ++i) {
    PolicySample& s = samples[i];
    for (int t = 0; t < 11; ++t) {
      s.tokens.push_back(tok(rng));
      s.loss_mask.push_back(t % 4 == 0 ? 0 : 1);
    }
    const std::vector<double> lp = testing::reference_logprobs(config, w, s.tokens);
    // Ratios spread over both sides of the clip range, but none within 0.05
    // of a clip boundary (log 0.8, log 1.28): the finite-difference step must
    // not cross a kink of the surrogate. GSPO's sequence ratio likewise.
    auto near_kink = [](double log_r) {
      return std::fabs(log_r - std::log(0.8)) < 0.05 || std::fabs(log_r - std::log(1.28)) < 0.05;
    };
    double seq_log_r;
    do {
      s.old_logprobs.clear();
      s.ref_logprobs.clear();
      double sum = 0;
      int n = 0;
      for (size_t t = 0; t < lp.size(); ++t) {
        double e;
        do e = noise(rng);
        while (near_kink(-e));
        s.old_logprobs.push_back(static_cast<float>(lp[t] + e));
        s.ref_logprobs.push_back(static_cast<float>(lp[t] + noise(rng)));
        if (t > 0 && s.loss_mask[t]) {
          sum -= e;
          ++n;
        }
      }
      seq_log_r = sum / n;
    } while (near_kink(seq_log_r));
    s.advantage = i == 0 ? 0.8 : -0.6;
  }
  // The surrogate from the float64 model's log-probs. policy_coefficients takes
  // them as floats, and rounding log-probs of about -5 to float (2.4e-7) made
  // the finite difference below noisy by ~1e-3 at h = 1e-4: 2-3% of fresh seeds
  // failed. PPO's and GSPO's surrogates (and the k3 KL) depend on log-probs only
  // through lp - old and lp - ref, so every log-prob is taken relative to the
  // unshifted model's (lp0): the same function, with small floats that round
  // far below the step.
  std::vector<std::vector<double>> lp0;
  for (auto& s : samples) lp0.push_back(testing::reference_logprobs(config, w, s.tokens));
  auto surrogate = [&](const model::NamedTensors& weights) {
    ObjectiveStats st;
    std::vector<const PolicySample*> ptrs;
    for (auto& s : samples) ptrs.push_back(&s);
    const BatchShape shape = batch_shape(ptrs);
    for (size_t i = 0; i < samples.size(); ++i) {
      const PolicySample& s = samples[i];
      const std::vector<double> lp = testing::reference_logprobs(config, weights, s.tokens);
      PolicySample relative = s;
      std::vector<float> lpf(lp.size());
      for (size_t t = 0; t < lp.size(); ++t) {
        lpf[t] = static_cast<float>(lp[t] - lp0[i][t]);
        relative.old_logprobs[t] = static_cast<float>(double(s.old_logprobs[t]) - lp0[i][t]);
        relative.ref_logprobs[t] = static_cast<float>(double(s.ref_logprobs[t]) - lp0[i][t]);
      }
      policy_coefficients(c, relative, lpf, shape, &st);
    }
    return st.loss;
  };
  TrainingModel tm(config, w);
  model::NamedTensors grads = tm.zero_grads();
  std::vector<const PolicySample*> batch;
  for (auto& s : samples) batch.push_back(&s);
  const ObjectiveStats st = policy_accumulate(tm, c, batch, grads);
  EXPECT_NEAR(st.loss, surrogate(w), 1e-4);
  // Directional derivative along a random direction through every weight.
  model::NamedTensors dir;
  double analytic = 0;
  for (auto& [name, t] : w) {
    dir[name] = core::Tensor::from_vector(testing::normal_vector(rng, t.numel()), t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) analytic += double(grads.at(name).f32()[i]) * dir[name].f32()[i];
  }
  const float h = 1e-4f;  // larger steps cross clip kinks of this sharp random model
  auto shifted = [&](float sign) {
    model::NamedTensors out;
    for (auto& [name, t] : w) {
      out[name] = t.clone();
      for (int64_t i = 0; i < t.numel(); ++i) out[name].f32()[i] += sign * h * dir[name].f32()[i];
    }
    return out;
  };
  const double numeric = (surrogate(shifted(1)) - surrogate(shifted(-1))) / (2.0 * h);
  // The analytic side is the float32 training model's backward; on this sharp
  // random model (weights of stddev 0.3) it differs from the float64 finite
  // difference by up to ~1% (measured over 1000 seeds; 0.5% failed 2-3% of
  // them). A wrong gradient (a lost factor, a sign, a missing term) is off by
  // far more.
  EXPECT_NEAR(analytic, numeric, 2e-2 * std::fabs(numeric) + 5e-4) << "analytic " << analytic << " numeric " << numeric << " clipped " << st.clipped << "/" << st.tokens;
  EXPECT_GT(std::fabs(numeric), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Losses, SurrogateGradient,
                         ::testing::Values(Case{"ppo", PolicyLoss::kPpo}, Case{"gspo", PolicyLoss::kGspo}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace interlace::learner
