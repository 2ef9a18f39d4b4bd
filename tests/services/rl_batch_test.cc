// The RL step's batch preparation alone: advantages per group, the documented
// staleness factor under policy downweight, the behaviour log-probs chosen by
// temperature, and the figures the step reports.
#include "interlace/rl/rl_batch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace interlace::rl {
namespace {

transport::TrajectoryMessage sample(int64_t group, int64_t index, int64_t version, double reward) {
  transport::TrajectoryMessage m;
  m.job = "j";
  auto& t = m.trajectory;
  t.group = group;
  t.sample = index;
  t.tokens = {5, 6, 7, 8};
  t.loss_mask = {0, 0, 1, 1};
  t.logprobs = {NAN, NAN, -1.0f, -2.0f};
  t.sampled_logprobs = {NAN, NAN, -0.5f, -0.25f};
  t.versions = {-1, -1, version, version + 1};  // the oldest trained token decides the lag
  t.reward = reward;
  return m;
}

TEST(RlBatch, DownweightScalesAStaleGroupsAdvantagesByTheDocumentedFactor) {
  JobSpec spec;
  spec.eta = 1;
  spec.stale_policy = StalePolicy::kDownweight;
  std::mt19937_64 rng(std::random_device{}());
  spec.stale_weight = std::uniform_real_distribution<double>(0.1, 0.9)(rng);
  spec.temperature = 1.0;
  const int64_t version = 10;
  Batch batch;
  // Group 7: generated at version 9 (lag 1 = eta: fresh). Group 8: at version 6 (lag 4: 3 past eta).
  const std::vector<double> r7 = {1, 0, 0.5}, r8 = {0, 1, 1};
  for (int64_t s = 0; s < 3; ++s) {
    batch[7][s] = sample(7, s, 9, r7[s]);
    batch[8][s] = sample(8, s, 6, r8[s]);
  }
  const PolicyBatch pb = make_policy_batch(batch, version, spec, nullptr);
  const auto expected = learner::compute_advantages({r7, r8}, spec.advantage);
  ASSERT_EQ(pb.samples.size(), 6u);
  const double factor = std::pow(spec.stale_weight, 3.0);
  for (int s = 0; s < 3; ++s) {
    EXPECT_DOUBLE_EQ(pb.samples[s].advantage, expected[0][s]) << "a fresh group is not scaled";
    EXPECT_DOUBLE_EQ(pb.samples[3 + s].advantage, expected[1][s] * factor)
        << "stale_weight " << spec.stale_weight << " ^ (lag 4 - eta 1)";
  }
  EXPECT_NE(expected[1][1], 0.0) << "the test needs a non-zero advantage to see the factor";
  EXPECT_EQ(pb.downweighted, 3);
  EXPECT_EQ(pb.lag_max, 4);
  EXPECT_DOUBLE_EQ(pb.lag_sum, 3 * 1 + 3 * 4);
  EXPECT_EQ(pb.trained_ids.size(), 6u);
  EXPECT_EQ(pb.trained_ids[3], nlohmann::json({8, 0}));
  EXPECT_EQ(pb.tokens, 6 * 2);
  EXPECT_DOUBLE_EQ(pb.reward_sum, 1.5 + 2);
  // Sampling at a temperature: the behaviour log-probs are the sampled ones.
  EXPECT_EQ(pb.samples[0].rollout_logprobs[2], -0.5f);
  EXPECT_TRUE(pb.samples[0].ref_logprobs.empty());
}

TEST(RlBatch, GreedyRolloutsAreCorrectedAgainstTheRawLogprobs) {
  JobSpec spec;
  spec.temperature = 0;
  Batch batch;
  batch[1][0] = sample(1, 0, 0, 1);
  batch[1][1] = sample(1, 1, 0, 0);
  const PolicyBatch pb = make_policy_batch(batch, 0, spec, nullptr);
  EXPECT_EQ(pb.samples[0].rollout_logprobs[2], -1.0f);
  EXPECT_EQ(pb.downweighted, 0);
}

TEST(RlBatch, StalenessWeightIsOneWithinEta) {
  JobSpec spec;
  spec.eta = 2;
  spec.stale_weight = 0.5;
  EXPECT_EQ(staleness_weight(0, spec), 1.0);
  EXPECT_EQ(staleness_weight(2, spec), 1.0);
  EXPECT_EQ(staleness_weight(3, spec), 0.5);
  EXPECT_EQ(staleness_weight(5, spec), 0.125);
}

}  // namespace
}  // namespace interlace::rl
