// Notices a job that stopped making progress: no training step completed in
// `factor` times the usual step time (the median of the recent ones; before
// the first step, `factor` times `min_seconds`), and never less than
// `min_seconds`. Workers gone, every group refused, a learner wedged: from the
// outside all of these look like a job that silently stops, which is what an
// INT64_MAX heartbeat once did for 40 s before anyone noticed.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>

namespace interlace::rl {

class StepWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  StepWatchdog(double factor, double min_seconds, Clock::time_point start)
      : factor_(factor), min_seconds_(min_seconds), last_step_(start) {}

  void step_done(Clock::time_point now);
  // How long the wait may last before it counts as a stall, in seconds.
  double limit_seconds() const;
  // Seconds since the last step if that is past the limit (a stall), else nothing.
  std::optional<double> stalled(Clock::time_point now) const;

 private:
  double factor_, min_seconds_;
  Clock::time_point last_step_;
  std::deque<double> recent_;  // the last step intervals, seconds
};

}  // namespace interlace::rl
