// The learner's training forward/backward for whole full and hybrid models:
// log-probabilities against the float64 reference model, and gradients of the
// SFT loss against central finite differences of that float64 reference.
#include "interlace/learner/training_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "interlace/model/model.h"
#include "model/reference_model.h"
#include "model/test_configs.h"
#include "support/random.h"

namespace interlace::learner {
namespace {

struct Arch {
  std::string name;
  nlohmann::json json;
  model::MoeNaming naming = model::MoeNaming::kPacked;
  float temperature = 1.0f;  // the learner scores at the rollout's sampling temperature
};

class WholeModelGradient : public ::testing::TestWithParam<Arch> {};

double reference_loss(const model::ModelConfig& c, const model::NamedTensors& w, const std::vector<int32_t>& tokens,
                      const std::vector<float>& scale, double temperature) {
  const std::vector<double> lp = testing::reference_logprobs(c, w, tokens, temperature);
  double loss = 0;
  for (size_t t = 1; t < tokens.size(); ++t) loss -= scale[t] * lp[t];
  return loss;
}

TEST_P(WholeModelGradient, MatchesFiniteDifferencesOfFloat64Reference) {
  const Arch& arch = GetParam();
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const model::ModelConfig config = testing::parse_or_die(arch.json);
  model::NamedTensors w = model::random_weights(config, seed, 0.25f, arch.naming);
  // Norm weights around 1 but not exactly (their gradient must be right too).
  for (auto& [name, t] : w)
    if (name.find("norm") != std::string::npos)
      for (float& x : t.span_f32()) x = 1.0f + 0.2f * std::normal_distribution<float>()(rng);
  const int64_t T = 13;
  std::vector<int32_t> tokens(T);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
  for (auto& t : tokens) t = tok(rng);
  std::vector<float> scale(T, 1.0f / (T - 3));
  scale[0] = scale[4] = scale[9] = 0.0f;  // masked tokens

  TrainingModel tm(config, w);
  tm.set_logit_temperature(arch.temperature);
  model::NamedTensors grads = tm.zero_grads();
  std::vector<float> lp;
  const double loss = tm.forward_backward(tokens, scale, grads, &lp);
  EXPECT_NEAR(loss, reference_loss(config, w, tokens, scale, arch.temperature), 1e-4);
  const std::vector<double> ref = testing::reference_logprobs(config, w, tokens, arch.temperature);
  for (int64_t t = 1; t < T; ++t) EXPECT_NEAR(lp[t], ref[t], 1e-4) << t;
  const std::vector<float> scored = tm.logprobs(tokens);
  for (int64_t t = 1; t < T; ++t) EXPECT_NEAR(scored[t], ref[t], 1e-4) << t;

  // Finite differences on a sample of entries from every tensor.
  const double l0 = reference_loss(config, w, tokens, scale, arch.temperature);
  double worst = 0;
  int checked = 0, skipped = 0;
  for (auto& [name, tensor] : w) {
    std::uniform_int_distribution<int64_t> pick(0, tensor.numel() - 1);
    for (int rep = 0; rep < 3; ++rep) {
      const int64_t i = pick(rng);
      float* p = tensor.f32() + i;
      const float keep = *p;
      // Small steps: fewer MoE top-k flips (the step is exact: differences of floats).
      const float up = keep + 1e-4f, down = keep - 1e-4f;
      *p = up;
      const double lu = reference_loss(config, w, tokens, scale, arch.temperature);
      *p = down;
      const double ld = reference_loss(config, w, tokens, scale, arch.temperature);
      *p = keep;
      const double fd = (lu - ld) / (double(up) - double(down));
      // MoE top-k selection is piecewise: where the step flips an expert choice the
      // loss jumps and central differences are meaningless. The two one-sided
      // differences then disagree; skip those samples (and count them).
      const double fd_up = (lu - l0) / (double(up) - double(keep)), fd_down = (l0 - ld) / (double(keep) - double(down));
      if (std::fabs(fd_up - fd_down) > 0.05 * std::fabs(fd) + 0.05) {
        ++skipped;
        continue;
      }
      const double an = grads.at(name).f32()[i];
      const double err = std::fabs(an - fd) / (std::fabs(fd) + 1e-3);
      worst = std::max(worst, err);
      ++checked;
      EXPECT_LT(std::fabs(an - fd), 2e-3 * std::fabs(fd) + 2e-4)
          << arch.name << " " << name << "[" << i << "]: analytic " << an << " numeric " << fd;
    }
  }
  // A draw with a near-tie in some token's routing flips it under any step
  // upstream (17% of samples for INTERLACE_TEST_SEED=1652356561); most draws skip 0-5%.
  EXPECT_LE(skipped, checked / 4) << "too many samples hit a routing discontinuity";
  std::fprintf(stderr, "%s: %d gradient entries checked (%d skipped at routing flips), worst relative error %.2e\n",
               arch.name.c_str(), checked, skipped, worst);
}

INSTANTIATE_TEST_SUITE_P(Architectures, WholeModelGradient,
                         ::testing::Values(Arch{"llama", testing::llama_json()}, Arch{"qwen3", testing::qwen3_json()},
                                           Arch{"minimax_packed", testing::minimax_json()},
                                           Arch{"minimax_per_expert", testing::minimax_json(),
                                                model::MoeNaming::kPerExpert},
                                           Arch{"minimax_qk_norm", testing::minimax_qk_norm_json()},
                                           Arch{"llama_temperature_0_7", testing::llama_json(),
                                                model::MoeNaming::kPacked, 0.7f},
                                           Arch{"minimax_temperature_1_3", testing::minimax_json(),
                                                model::MoeNaming::kPacked, 1.3f}),
                         [](const auto& info) { return info.param.name; });

// The training forward agrees with the inference model's prefill, for every
// architecture and option the two implement separately: MiniMax residual
// factors and both MoE namings, Llama's biases and tied embeddings, Qwen3's
// q/k norms and sliding window. Fresh weights and tokens each run.
class LogprobsMatch : public ::testing::TestWithParam<Arch> {};

TEST_P(LogprobsMatch, TrainingForwardEqualsInferencePrefill) {
  const Arch& arch = GetParam();
  const model::ModelConfig config = testing::parse_or_die(arch.json);
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  model::NamedTensors w = model::random_weights(config, rng(), 0.25f, arch.naming);
  TrainingModel tm(config, w);
  auto m = model::Model::from_tensors(config, w, *model::parse_precision("fp32"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<int32_t> tokens(29);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(config.vocab_size));
  auto a = tm.logprobs(tokens);
  auto b = (*m)->score(tokens, model::ScorePath::kPrefill);
  // fp32 sums in another order: the error grows with the log-prob's size (seed
  // 724535817 gave 4.3e-5 at -8.04 against an absolute 2e-5); a wrong factor
  // or mask is off by far more.
  for (size_t t = 1; t < tokens.size(); ++t)
    EXPECT_NEAR(a[t], b[t], 2e-5 * std::max(1.0, std::abs(double(b[t])) / 2)) << arch.name << " token " << t << " seed " << seed;
}

INSTANTIATE_TEST_SUITE_P(Architectures, LogprobsMatch,
                         ::testing::Values(Arch{"llama", testing::llama_json()}, Arch{"qwen3", testing::qwen3_json()},
                                           Arch{"minimax_packed", testing::minimax_json()},
                                           Arch{"minimax_per_expert", testing::minimax_json(),
                                                model::MoeNaming::kPerExpert},
                                           Arch{"minimax_qk_norm", testing::minimax_qk_norm_json()}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace interlace::learner
