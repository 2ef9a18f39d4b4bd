// The learner's run log alone: reopening at a checkpoint cuts the files back
// to it and reports what they say was trained or dropped up to it; rows
// appended after are kept; sync reaches the disk.
#include "interlace/rl/run_log.h"

#include <gtest/gtest.h>

#include <random>

#include "interlace/rl/run_layout.h"
#include "support/temp_dir.h"

namespace interlace::rl {
namespace {

TEST(RunLog, ReopeningAtACheckpointCutsTheFilesBackAndReportsWhatWasConsumed) {
  test::TempDir dir;
  std::mt19937_64 rng(std::random_device{}());
  const int64_t steps = 4 + int64_t(rng() % 5), checkpoint = 1 + int64_t(rng() % (steps - 1));
  {
    std::set<SampleKey> consumed;
    auto log = RunLog::open(dir.path(), 0, &consumed);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_TRUE(consumed.empty());
    for (int64_t step = 1; step <= steps; ++step) {
      log->trained(step, RunLog::ids_json({{step, 0}, {step, 1}}));
      log->dropped(step, RunLog::ids_json({{100 + step, 0}}), {{"reason", "stale"}});
      log->metrics({{"step", step}, {"reward", 0.5}});
    }
    ASSERT_TRUE(log->sync().ok());
  }
  std::set<SampleKey> consumed;
  auto log = RunLog::open(dir.path(), checkpoint, &consumed);
  ASSERT_TRUE(log.ok()) << log.status();
  std::set<SampleKey> expected;
  for (int64_t step = 1; step <= checkpoint; ++step) expected.insert({{step, 0}, {step, 1}});
  // A drop logged after step s happened after checkpoint s was written.
  for (int64_t step = 1; step < checkpoint; ++step) expected.insert({100 + step, 0});
  EXPECT_EQ(consumed, expected) << "steps " << steps << ", checkpoint " << checkpoint;
  EXPECT_EQ(read_jsonl(run_path(dir.path(), "metrics.jsonl")).size(), size_t(checkpoint));
  const auto dropped = read_jsonl(run_path(dir.path(), "dropped.jsonl"));
  ASSERT_EQ(dropped.size(), size_t(checkpoint - 1));
  for (const auto& row : dropped) EXPECT_EQ(row["reason"], "stale") << "extra fields are kept";

  log->trained(checkpoint + 1, RunLog::ids_json({{77, 0}}));
  ASSERT_TRUE(log->sync().ok());
  const auto rows = read_jsonl(run_path(dir.path(), "trained.jsonl"));
  ASSERT_EQ(rows.size(), size_t(checkpoint + 1));
  EXPECT_EQ(rows.back(), nlohmann::json({{"step", checkpoint + 1}, {"ids", {{77, 0}}}}));
}

}  // namespace
}  // namespace interlace::rl
