// What the learner refuses before spooling: each way a trajectory that decodes
// can still break training, refused with the field named; a good one passes.
#include "interlace/rl/trajectory_check.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace interlace::rl {
namespace {

// A random well-formed trajectory: a prompt, then generated tokens with
// log-probs and versions, as the agent loop writes them.
rollout::Trajectory good_trajectory(std::mt19937& rng, int64_t vocab) {
  rollout::Trajectory t;
  t.group = 7;
  t.sample = 1;
  const int prompt = 3 + rng() % 5, generated = 1 + rng() % 6;
  for (int i = 0; i < prompt + generated; ++i) {
    const bool gen = i >= prompt;
    t.tokens.push_back(static_cast<int32_t>(rng() % vocab));
    t.loss_mask.push_back(gen);
    const float lp = gen ? -float(rng() % 1000) / 100.0f : NAN;
    t.logprobs.push_back(lp);
    t.sampled_logprobs.push_back(lp);
    t.versions.push_back(gen ? rng() % 3 : -1);
  }
  t.reward = 1.0;
  return t;
}

TrajectoryLimits limits() {
  return {.vocab_size = 64, .group_size = 4, .max_tokens = 64, .max_version = 2, .sampled_logprobs = true};
}

std::string refusal(const rollout::Trajectory& t, const TrajectoryLimits& l = limits()) {
  const absl::Status s = check_trajectory(t, l);
  return s.ok() ? "" : std::string(s.message());
}

TEST(TrajectoryCheck, GoodTrajectoriesPass) {
  std::mt19937 rng(std::random_device{}());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(refusal(good_trajectory(rng, 64)), "");
}

TEST(TrajectoryCheck, EachBreakageIsRefusedNamingTheField) {
  std::mt19937 rng(std::random_device{}());
  const rollout::Trajectory g = good_trajectory(rng, 64);
  const size_t last = g.tokens.size() - 1;  // a generated token
  auto with = [&](auto change) {
    rollout::Trajectory t = g;
    change(t);
    return refusal(t);
  };
  // A token outside the vocabulary once aborted the learner, on every restart.
  EXPECT_NE(with([&](auto& t) { t.tokens[1] = 64; }).find("tokens[1] = 64 is outside the vocabulary"), std::string::npos);
  EXPECT_NE(with([&](auto& t) { t.tokens[0] = -1; }).find("tokens[0] = -1"), std::string::npos);
  // So did a one-token trajectory.
  EXPECT_NE(with([](auto& t) {
              t.tokens.resize(1), t.loss_mask.resize(1), t.logprobs.resize(1), t.sampled_logprobs.resize(1),
                  t.versions.resize(1);
            }).find("a trajectory needs a prompt and at least one generated token"),
            std::string::npos);
  // NaN log-probs on trained tokens were acked and the step silently skipped.
  EXPECT_NE(with([&](auto& t) { t.sampled_logprobs[last] = NAN; }).find("sampled_logprobs[" + std::to_string(last)),
            std::string::npos);
  EXPECT_NE(with([&](auto& t) { t.sampled_logprobs[last] = 0.5f; }).find("expected a finite log-probability"),
            std::string::npos);
  // Greedy jobs correct against the raw log-probs instead.
  {
    rollout::Trajectory t = g;
    t.logprobs[last] = -INFINITY;
    TrajectoryLimits greedy = limits();
    greedy.sampled_logprobs = false;
    EXPECT_EQ(refusal(t), "");
    EXPECT_NE(refusal(t, greedy).find("logprobs[" + std::to_string(last)), std::string::npos);
  }
  // Versions from the future made a group never stale.
  EXPECT_NE(with([&](auto& t) { t.versions[last] = 3; }).find("is not a published weights version (0..2)"),
            std::string::npos);
  EXPECT_NE(with([&](auto& t) { t.versions[last] = -1; }).find("versions["), std::string::npos);
  EXPECT_NE(with([](auto& t) { t.versions.pop_back(); }).find("versions has"), std::string::npos);
  EXPECT_NE(with([](auto& t) { t.loss_mask.pop_back(); }).find("loss_mask has"), std::string::npos);
  EXPECT_NE(with([](auto& t) { t.loss_mask[0] = 1; }).find("loss_mask[0]"), std::string::npos);
  EXPECT_NE(with([](auto& t) { std::fill(t.loss_mask.begin(), t.loss_mask.end(), 0); }).find("no generated token"),
            std::string::npos);
  EXPECT_NE(with([](auto& t) { t.reward = NAN; }).find("reward"), std::string::npos);
  EXPECT_NE(with([](auto& t) { t.reward = 1e9; }).find("reward"), std::string::npos);
  EXPECT_NE(with([](auto& t) { t.sample = 4; }).find("sample 4 is outside the group size 4"), std::string::npos);
  EXPECT_NE(with([](auto& t) {
              t.tokens.resize(65, 1), t.loss_mask.resize(65, 1), t.logprobs.resize(65, -1.0f),
                  t.sampled_logprobs.resize(65, -1.0f), t.versions.resize(65, 0);
            }).find("over the job's max_episode_tokens 64"),
            std::string::npos);
}

}  // namespace
}  // namespace interlace::rl
