// The task source alone, driven as a learner or a controller would: the
// issue bound in sync and async mode, re-issue after a worker restarts or a
// task times out, the per-worker cap, and who may send which group.
#include "interlace/rl/task_source.h"

#include <gtest/gtest.h>

#include <set>

namespace interlace::rl {
namespace {

using Clock = TaskSource::Clock;

JobSpec spec(StalenessMode mode) {
  JobSpec s;
  s.name = "job";
  s.env = "calculator";
  s.mode = mode;
  s.groups_per_step = 2;
  s.group_size = 2;
  s.eta = 1;
  s.max_running = 8;  // 4 groups a worker at most
  s.task_timeout_s = 10;
  return s;
}

const auto kNeverComplete = [](int64_t) { return false; };

std::set<int64_t> groups_of(const TaskSource::Grant& g) {
  std::set<int64_t> out;
  for (const auto& t : g.tasks) out.insert(t.group);
  return out;
}

TEST(TaskSource, SyncModeKeepsOneBatchInFlightAtTheCurrentVersion) {
  TaskSource source(spec(StalenessMode::kSync), /*start=*/0);
  const auto now = Clock::now();
  ASSERT_EQ(source.worker_seen("w0", 1, now), TaskSource::Seen::kKnown);
  auto g = source.grant("w0", 1, 100, {.version = 3}, kNeverComplete, now);
  ASSERT_EQ(g.tasks.size(), 2u) << "sync: one batch (groups_per_step) at a time";
  for (const auto& t : g.tasks) EXPECT_EQ(t.weights_version, 3) << "sync tasks need the weights they train";
  EXPECT_TRUE(source.grant("w0", 1, 100, {.version = 3}, kNeverComplete, now).tasks.empty());
  // Both complete; the step trains: still nothing new.
  for (const auto& t : g.tasks) source.finished(t.group);
  EXPECT_TRUE(source.grant("w0", 1, 100, {.groups_held = 2, .step_running = true, .version = 3}, kNeverComplete, now)
                  .tasks.empty());
  // The step is done (version 4): the next batch, at version 4.
  auto next = source.grant("w0", 1, 100, {.version = 4}, kNeverComplete, now);
  ASSERT_EQ(next.tasks.size(), 2u);
  for (const auto& t : next.tasks) EXPECT_EQ(t.weights_version, 4);
  EXPECT_EQ(next.new_groups, 2);
}

TEST(TaskSource, AsyncModeRunsAheadByEtaBatches) {
  JobSpec s = spec(StalenessMode::kAsync);
  s.max_running = 4;  // 2 groups a worker
  TaskSource source(s, 0);
  const auto now = Clock::now();
  source.worker_seen("w0", 1, now);
  source.worker_seen("w1", 1, now);
  auto a = source.grant("w0", 1, 100, {}, kNeverComplete, now);
  auto b = source.grant("w1", 1, 100, {}, kNeverComplete, now);
  EXPECT_EQ(a.tasks.size(), 2u);
  EXPECT_EQ(b.tasks.size(), 2u);
  EXPECT_TRUE(source.grant("w2", 1, 100, {}, kNeverComplete, now).tasks.empty()) << "(eta + 1) x groups_per_step";
  for (const auto& t : a.tasks) EXPECT_EQ(t.weights_version, 0) << "async tasks run on any weights";
  // Two complete and held for training still count toward the bound.
  for (const auto& t : a.tasks) source.finished(t.group);
  EXPECT_TRUE(source.grant("w0", 1, 100, {.groups_held = 2}, kNeverComplete, now).tasks.empty());
  // Trained: their places are free again.
  EXPECT_EQ(source.grant("w0", 1, 100, {.groups_held = 0}, kNeverComplete, now).tasks.size(), 2u);
}

TEST(TaskSource, ANewIncarnationGetsItsPredecessorsGroupsAgain) {
  TaskSource source(spec(StalenessMode::kAsync), 0);
  const auto now = Clock::now();
  source.worker_seen("w0", 111, now);
  const auto first = source.grant("w0", 111, 2, {}, kNeverComplete, now);
  ASSERT_EQ(first.tasks.size(), 2u);
  // The worker restarts: a new incarnation; its old groups come back with attempt + 1.
  ASSERT_EQ(source.worker_seen("w0", 222, now), TaskSource::Seen::kRestarted);
  EXPECT_EQ(source.running(), 0);
  const auto again = source.grant("w0", 222, 2, {}, kNeverComplete, now);
  EXPECT_EQ(groups_of(again), groups_of(first));
  EXPECT_EQ(again.reissued, 2);
  for (const auto& t : again.tasks) {
    EXPECT_EQ(t.attempt, 1u);
    EXPECT_NE(t.seed, first.tasks[0].seed) << "another attempt samples anew";
  }
  // A heartbeat of the replaced incarnation (still queued somewhere) is ignored.
  EXPECT_EQ(source.worker_seen("w0", 111, now), TaskSource::Seen::kStale);
  // The old attempt may not send samples any more; the new one may.
  const int64_t group = again.tasks[0].group;
  EXPECT_FALSE(source.check_issued(group, "w0", 0).ok());
  EXPECT_TRUE(source.check_issued(group, "w0", 1).ok());
}

TEST(TaskSource, ATaskThatTimesOutIsHandedOutAgain) {
  TaskSource source(spec(StalenessMode::kAsync), 0);
  const auto t0 = Clock::now();
  source.worker_seen("slow", 1, t0);
  source.worker_seen("fast", 1, t0);
  const auto slow = source.grant("slow", 1, 1, {}, kNeverComplete, t0);
  ASSERT_EQ(slow.tasks.size(), 1u);
  source.expire(t0 + std::chrono::seconds(9));
  EXPECT_EQ(source.running(), 1) << "not yet past the 10 s timeout";
  source.expire(t0 + std::chrono::seconds(11));
  EXPECT_EQ(source.running(), 0);
  EXPECT_EQ(source.waiting_reissue(), 1);
  const auto taken = source.grant("fast", 1, 1, {}, kNeverComplete, t0 + std::chrono::seconds(11));
  ASSERT_EQ(taken.tasks.size(), 1u);
  EXPECT_EQ(taken.tasks[0].group, slow.tasks[0].group);
  EXPECT_EQ(taken.tasks[0].attempt, 1u);
  const auto status = source.check_issued(slow.tasks[0].group, "slow", 0);
  EXPECT_NE(std::string(status.message()).find("was not issued to slow"), std::string::npos) << status;
  // A re-issue that completed meanwhile (samples of an earlier start) is skipped.
  source.expire(t0 + std::chrono::seconds(30));
  const int64_t group = taken.tasks[0].group;
  EXPECT_TRUE(source.grant("fast", 1, 1, {}, [&](int64_t g) { return g == group; }, t0 + std::chrono::seconds(30))
                  .reissued == 0);
}

TEST(TaskSource, NoWorkerHoldsMoreThanARunningBatch) {
  JobSpec s = spec(StalenessMode::kAsync);
  s.eta = 100;  // the bound is not what limits here
  TaskSource source(s, 0);
  const auto now = Clock::now();
  source.worker_seen("greedy", 1, now);
  EXPECT_EQ(source.grant("greedy", 1, 1000, {}, kNeverComplete, now).tasks.size(), 4u) << "ceil(8 / 2)";
  EXPECT_TRUE(source.grant("greedy", 1, 1000, {}, kNeverComplete, now).tasks.empty());
  source.worker_seen("other", 1, now);
  EXPECT_EQ(source.grant("other", 1, 1000, {}, kNeverComplete, now).tasks.size(), 4u);
}

TEST(TaskSource, GroupIdsCarryTheStartAndOnlyIssuedGroupsAreTaken) {
  TaskSource source(spec(StalenessMode::kAsync), /*start=*/3);
  const auto now = Clock::now();
  source.worker_seen("w0", 1, now);
  const auto g = source.grant("w0", 1, 1, {}, kNeverComplete, now);
  ASSERT_EQ(g.tasks.size(), 1u);
  EXPECT_EQ(g.tasks[0].group >> 32, 3) << "ids never repeat across restarts";
  EXPECT_TRUE(source.check_issued(g.tasks[0].group, "w0", 0).ok());
  EXPECT_FALSE(source.check_issued(g.tasks[0].group, "w1", 0).ok());
  EXPECT_NE(std::string(source.check_issued(g.tasks[0].group + 1, "w0", 0).message()).find("was never issued"),
            std::string::npos);
  EXPECT_FALSE(source.check_issued(int64_t{4} << 32, "w0", 0).ok()) << "a later start's id";
  EXPECT_FALSE(source.check_issued(-1, "w0", 0).ok());
  EXPECT_TRUE(source.check_issued((int64_t{2} << 32) + 7, "anyone", 5).ok()) << "an earlier start's: not known";
  source.finished(g.tasks[0].group);
  EXPECT_NE(std::string(source.check_issued(g.tasks[0].group, "w0", 0).message()).find("is not running"),
            std::string::npos);
}

}  // namespace
}  // namespace interlace::rl
