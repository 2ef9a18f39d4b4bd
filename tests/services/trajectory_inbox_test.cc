// The learner's trajectory inbox alone, on a real spool file: staging and the
// sync that makes trajectories pending, duplicates, the bound on unfinished
// groups, a failing disk, replay after a restart (consumed ids, quarantine),
// taking batches, stale drops and compaction.
#include "interlace/rl/trajectory_inbox.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "support/temp_dir.h"

namespace interlace::rl {
namespace {

constexpr int64_t kGroupSize = 2;

transport::TrajectoryMessage sample(int64_t group, int64_t index, int64_t version = 0, int32_t last_token = 7) {
  transport::TrajectoryMessage m;
  m.job = "j";
  auto& t = m.trajectory;
  t.group = group;
  t.sample = index;
  t.tokens = {5, 6, last_token};
  t.loss_mask = {0, 1, 1};
  t.logprobs = {NAN, -1.0f, -2.0f};
  t.sampled_logprobs = {NAN, -1.0f, -2.0f};
  t.versions = {-1, version, version};
  t.reward = double(index);
  return m;
}

TrajectoryLimits limits() { return {.vocab_size = 16, .group_size = kGroupSize, .max_tokens = 64, .max_version = -1}; }

struct Fixture {
  test::TempDir dir;
  std::string spool() const { return (std::filesystem::path(dir.path()) / "spool.bin").string(); }
  TrajectoryInbox::Options options(int64_t max_partial = 8, int fail_every = 0) const {
    return {.spool_path = spool(), .group_size = kGroupSize, .max_partial_groups = max_partial,
            .inject_write_failures = fail_every};
  }
  TrajectoryInbox open(const std::set<SampleKey>& consumed = {}, TrajectoryInbox::Replayed* r = nullptr,
                       int64_t max_partial = 8) const {
    auto inbox = TrajectoryInbox::open(options(max_partial), consumed, limits(), r);
    EXPECT_TRUE(inbox.ok()) << inbox.status();
    return std::move(*inbox);
  }
};

TrajectoryInbox::Offered offer(TrajectoryInbox& inbox, const transport::TrajectoryMessage& m,
                               std::string* reason = nullptr) {
  std::string r;
  return inbox.offer(m, transport::encode_trajectory(m), reason ? reason : &r);
}

TEST(TrajectoryInbox, StagedTrajectoriesArePendingOnlyAfterTheSync) {
  Fixture f;
  TrajectoryInbox inbox = f.open();
  EXPECT_EQ(offer(inbox, sample(1, 0)), TrajectoryInbox::Offered::kStaged);
  EXPECT_TRUE(inbox.known({1, 0}));
  EXPECT_TRUE(inbox.pending().empty()) << "not durable yet";
  EXPECT_EQ(offer(inbox, sample(1, 0)), TrajectoryInbox::Offered::kDuplicate) << "a resend while staged";
  EXPECT_EQ(offer(inbox, sample(1, 1)), TrajectoryInbox::Offered::kStaged);
  EXPECT_EQ(offer(inbox, sample(2, 0)), TrajectoryInbox::Offered::kStaged);
  auto completed = inbox.sync();
  ASSERT_TRUE(completed.ok()) << completed.status();
  EXPECT_EQ(*completed, std::vector<int64_t>{1});
  EXPECT_EQ(inbox.complete_groups(), std::vector<int64_t>{1});
  EXPECT_EQ(inbox.partial_groups(), 1);
  EXPECT_EQ(offer(inbox, sample(1, 1)), TrajectoryInbox::Offered::kDuplicate) << "a resend once spooled";
  EXPECT_GT(inbox.synced_bytes(), 0u);
}

TEST(TrajectoryInbox, ANewGroupPastTheBoundOnUnfinishedGroupsIsRefused) {
  Fixture f;
  TrajectoryInbox inbox = f.open({}, nullptr, /*max_partial=*/2);
  EXPECT_EQ(offer(inbox, sample(1, 0)), TrajectoryInbox::Offered::kStaged);
  EXPECT_EQ(offer(inbox, sample(2, 0)), TrajectoryInbox::Offered::kStaged);
  std::string reason;
  EXPECT_EQ(offer(inbox, sample(3, 0), &reason), TrajectoryInbox::Offered::kTooManyGroups);
  EXPECT_NE(reason.find("group 3 is not started"), std::string::npos) << reason;
  EXPECT_EQ(offer(inbox, sample(1, 1)), TrajectoryInbox::Offered::kStaged) << "a started group still completes";
  ASSERT_TRUE(inbox.sync().ok());
  EXPECT_EQ(offer(inbox, sample(3, 0)), TrajectoryInbox::Offered::kStaged) << "group 1 completed: room again";
}

TEST(TrajectoryInbox, AFailedWriteDropsEveryStagedTrajectoryAndTheyCanBeSentAgain) {
  Fixture f;
  auto opened = TrajectoryInbox::open(f.options(8, /*fail_every=*/3), {}, limits(), nullptr);
  ASSERT_TRUE(opened.ok()) << opened.status();
  TrajectoryInbox& inbox = *opened;
  EXPECT_EQ(offer(inbox, sample(1, 0)), TrajectoryInbox::Offered::kStaged);
  EXPECT_EQ(offer(inbox, sample(1, 1)), TrajectoryInbox::Offered::kStaged);
  std::string reason;
  EXPECT_EQ(offer(inbox, sample(2, 0), &reason), TrajectoryInbox::Offered::kSpoolFailed);
  EXPECT_FALSE(reason.empty());
  EXPECT_FALSE(inbox.has_staged());
  EXPECT_FALSE(inbox.known({1, 0})) << "never acknowledged: the resend must be taken";
  EXPECT_EQ(offer(inbox, sample(1, 0)), TrajectoryInbox::Offered::kStaged);
  EXPECT_EQ(offer(inbox, sample(1, 1)), TrajectoryInbox::Offered::kStaged);
  auto completed = inbox.sync();
  ASSERT_TRUE(completed.ok());
  EXPECT_EQ(*completed, std::vector<int64_t>{1});
}

TEST(TrajectoryInbox, AfterARestartConsumedIdsAreKnownButNotPendingAndBadRecordsAreQuarantined) {
  Fixture f;
  {
    TrajectoryInbox inbox = f.open();
    for (int64_t g : {1, 2})
      for (int64_t s = 0; s < kGroupSize; ++s) ASSERT_EQ(offer(inbox, sample(g, s, 3)), TrajectoryInbox::Offered::kStaged);
    // Spooled by an older learner that did not check the vocabulary.
    ASSERT_EQ(offer(inbox, sample(4, 0, 0, /*last_token=*/99)), TrajectoryInbox::Offered::kStaged);
    ASSERT_TRUE(inbox.sync().ok());
  }
  TrajectoryInbox::Replayed replayed;
  TrajectoryInbox inbox = f.open({{1, 0}, {1, 1}}, &replayed);
  EXPECT_EQ(replayed.records, 5);
  EXPECT_EQ(replayed.max_version, 3);
  ASSERT_EQ(replayed.quarantined.size(), 1u);
  EXPECT_EQ(replayed.quarantined[0].key, (SampleKey{4, 0}));
  EXPECT_NE(replayed.quarantined[0].reason.find("outside the vocabulary"), std::string::npos);
  EXPECT_EQ(inbox.complete_groups(), std::vector<int64_t>{2}) << "group 1 was trained before the restart";
  EXPECT_TRUE(inbox.known({1, 0}));
  EXPECT_TRUE(inbox.known({4, 0})) << "a resend of a quarantined record is a duplicate";
  EXPECT_EQ(offer(inbox, sample(1, 1)), TrajectoryInbox::Offered::kDuplicate);
}

TEST(TrajectoryInbox, TakeHandsOutTheOldestCompleteGroupsAndDropStaleRemovesLaggingOnes) {
  Fixture f;
  TrajectoryInbox inbox = f.open();
  // Groups 5, 3, 9 complete (versions 1, 4, 4); group 7 unfinished.
  for (auto [g, v] : {std::pair<int64_t, int64_t>{5, 1}, {3, 4}, {9, 4}})
    for (int64_t s = 0; s < kGroupSize; ++s) offer(inbox, sample(g, s, v));
  offer(inbox, sample(7, 0, 0));
  ASSERT_TRUE(inbox.sync().ok());
  const std::vector<SampleKey> dropped = inbox.drop_stale(/*version=*/5, /*eta=*/2);
  EXPECT_EQ(dropped, (std::vector<SampleKey>{{5, 0}, {5, 1}})) << "lag 4 > eta 2; lag 1 stays";
  const Batch batch = inbox.take(1);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch.begin()->first, 3);
  EXPECT_EQ(batch.begin()->second.size(), size_t(kGroupSize));
  EXPECT_EQ(inbox.complete_groups(), std::vector<int64_t>{9});
  EXPECT_EQ(inbox.partial_groups(), 1);
}

TEST(TrajectoryInbox, CompactionKeepsOnlyWhatIsPending) {
  Fixture f;
  std::mt19937_64 rng(std::random_device{}());
  const int64_t groups = 3 + int64_t(rng() % 5);
  {
    TrajectoryInbox inbox = f.open();
    for (int64_t g = 1; g <= groups; ++g)
      for (int64_t s = 0; s < kGroupSize; ++s) offer(inbox, sample(g, s));
    ASSERT_TRUE(inbox.sync().ok());
    const uint64_t before = inbox.synced_bytes();
    const Batch trained = inbox.take(groups - 1);  // one group left pending
    ASSERT_TRUE(inbox.compact().ok());
    EXPECT_LT(inbox.synced_bytes(), before);
    EXPECT_EQ(offer(inbox, sample(1, 0)), TrajectoryInbox::Offered::kDuplicate) << "still known after compaction";
  }
  TrajectoryInbox::Replayed replayed;
  TrajectoryInbox inbox = f.open({}, &replayed);
  EXPECT_EQ(replayed.records, kGroupSize);
  EXPECT_EQ(inbox.complete_groups(), std::vector<int64_t>{groups});
}

}  // namespace
}  // namespace interlace::rl
