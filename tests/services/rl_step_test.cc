// The RL step alone, on a small random hybrid model: a batch with no reward
// signal leaves the weights bit for bit (no momentum step on zero gradients);
// one with a signal moves them and reports the optimizer's step; the mismatch
// figures compare the learner's log-probs with the rollout's on trained tokens
// only.
#include "interlace/rl/rl_step.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "interlace/model/weights.h"
#include "model/test_configs.h"

namespace interlace::rl {
namespace {

struct StepSetup {
  std::mt19937_64 rng{std::random_device{}()};
  model::ModelConfig config = testing::parse_or_die(testing::minimax_json());
  learner::TrainingModel model{config, model::random_weights(config, rng(), 0.1f)};
  learner::Optimizer optimizer{learner::OptimizerConfig{.lr = 1e-2}, model.weights()};
  JobSpec spec;
  StepSetup() {
    spec.group_size = 3;
    spec.eta = 4;
    spec.temperature = 1.0;
  }

  // A trajectory whose rollout log-probs are the model's own plus `offset` on
  // generated tokens (and garbage, never looked at, on the prompt).
  transport::TrajectoryMessage sample(int64_t group, int64_t index, double reward, float offset) {
    transport::TrajectoryMessage m;
    auto& t = m.trajectory;
    t.group = group;
    t.sample = index;
    const int n = 6 + int(rng() % 6), prompt = 3;
    for (int i = 0; i < n; ++i) t.tokens.push_back(int32_t(rng() % config.vocab_size));
    const std::vector<float> own = model.logprobs(t.tokens);
    for (int i = 0; i < n; ++i) {
      const bool generated = i >= prompt;
      t.loss_mask.push_back(generated);
      t.logprobs.push_back(generated ? own[i] + offset : 123.0f);
      t.sampled_logprobs.push_back(t.logprobs.back());
      t.versions.push_back(generated ? 0 : -1);
    }
    t.reward = reward;
    return m;
  }
};

TEST(RlStep, ABatchWithoutSignalLeavesTheWeightsBitForBit) {
  StepSetup s;
  Batch batch;
  for (int64_t g : {4, 9})
    for (int64_t i = 0; i < s.spec.group_size; ++i) batch[g][i] = s.sample(g, i, /*reward=*/double(g), 0.0f);
  const model::NamedTensors before = [&] {
    model::NamedTensors c;
    for (const auto& [name, t] : s.model.weights()) c[name] = t.clone();
    return c;
  }();
  const RlStepResult r = rl_step(batch, s.spec, {.model = s.model, .optimizer = s.optimizer, .step = 0, .version = 0});
  EXPECT_FALSE(r.signal);
  EXPECT_FALSE(r.optimizer.applied);
  for (const auto& [name, t] : s.model.weights())
    ASSERT_EQ(std::memcmp(t.f32(), before.at(name).f32(), t.numel() * sizeof(float)), 0) << name;
  EXPECT_EQ(r.groups, 2);
  EXPECT_EQ(r.trained_ids, nlohmann::json({{4, 0}, {4, 1}, {4, 2}, {9, 0}, {9, 1}, {9, 2}}));
  EXPECT_NEAR(r.mismatch.logprob_abs_diff_mean, 0.0, 1e-5) << "rollout log-probs are the model's own";
}

TEST(RlStep, ABatchWithSignalStepsTheOptimizerAndMeasuresTheMismatchOnTrainedTokens) {
  StepSetup s;
  std::uniform_real_distribution<float> u(0.05f, 0.5f);
  const float offset = u(s.rng);
  Batch batch;
  for (int64_t i = 0; i < s.spec.group_size; ++i) batch[1][i] = s.sample(1, i, /*reward=*/double(i), offset);
  const std::vector<float> before(s.model.weights().begin()->second.span_f32().begin(),
                                  s.model.weights().begin()->second.span_f32().end());
  const RlStepResult r = rl_step(batch, s.spec, {.model = s.model, .optimizer = s.optimizer, .step = 0, .version = 2});
  EXPECT_TRUE(r.signal);
  EXPECT_TRUE(r.optimizer.applied);
  EXPECT_GT(r.optimizer.grad_norm, 0.0);
  const auto after = s.model.weights().begin()->second.span_f32();
  EXPECT_FALSE(std::equal(before.begin(), before.end(), after.begin())) << "the step moved the weights";
  // The forward runs before the update: |learner - rollout| is the offset on
  // every generated token (the prompt's garbage values are not counted).
  EXPECT_NEAR(r.mismatch.logprob_abs_diff_mean, offset, 1e-4);
  EXPECT_DOUBLE_EQ(r.lag_max, 2);
  EXPECT_DOUBLE_EQ(r.reward_sum, 0 + 1 + 2);
  EXPECT_GT(r.tokens, 0);
}

}  // namespace
}  // namespace interlace::rl
