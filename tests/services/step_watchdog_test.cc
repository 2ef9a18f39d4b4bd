// The learner's watchdog on a made-up clock: its limit follows the median
// step time (one slow step does not move it), never drops below min_seconds,
// and a stall is reported only past the limit.
#include "interlace/rl/step_watchdog.h"

#include <gtest/gtest.h>

namespace interlace::rl {
namespace {

using Clock = StepWatchdog::Clock;
using std::chrono::milliseconds;

TEST(StepWatchdog, LimitFollowsTheMedianStepTime) {
  const Clock::time_point t0{};
  StepWatchdog w(10, 1.0, t0);
  EXPECT_DOUBLE_EQ(w.limit_seconds(), 10.0);  // before the first step: factor x min_seconds
  EXPECT_FALSE(w.stalled(t0 + milliseconds(9900)));
  EXPECT_TRUE(w.stalled(t0 + milliseconds(10100)));
  Clock::time_point t = t0;
  for (int ms : {500, 500, 500, 9000, 500}) w.step_done(t += milliseconds(ms));  // one slow step
  EXPECT_DOUBLE_EQ(w.limit_seconds(), 5.0);  // 10 x the median 0.5 s
  EXPECT_FALSE(w.stalled(t + milliseconds(4900)));
  auto waited = w.stalled(t + milliseconds(5200));
  ASSERT_TRUE(waited);
  EXPECT_NEAR(*waited, 5.2, 1e-9);
  // Fast steps: the limit is never below min_seconds.
  StepWatchdog fast(10, 1.0, t0);
  t = t0;
  for (int i = 0; i < 5; ++i) fast.step_done(t += milliseconds(10));
  EXPECT_DOUBLE_EQ(fast.limit_seconds(), 1.0);
}

}  // namespace
}  // namespace interlace::rl
