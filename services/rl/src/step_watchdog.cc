#include "interlace/rl/step_watchdog.h"

#include <algorithm>
#include <vector>

namespace interlace::rl {

void StepWatchdog::step_done(Clock::time_point now) {
  recent_.push_back(std::chrono::duration<double>(now - last_step_).count());
  if (recent_.size() > 16) recent_.pop_front();
  last_step_ = now;
}

double StepWatchdog::limit_seconds() const {
  if (recent_.empty()) return factor_ * min_seconds_;
  std::vector<double> sorted(recent_.begin(), recent_.end());
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  return std::max(min_seconds_, factor_ * sorted[sorted.size() / 2]);
}

std::optional<double> StepWatchdog::stalled(Clock::time_point now) const {
  const double waited = std::chrono::duration<double>(now - last_step_).count();
  if (waited > limit_seconds()) return waited;
  return std::nullopt;
}

}  // namespace interlace::rl
