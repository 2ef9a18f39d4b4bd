#include "interlace/rl/eval_compare.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"

namespace interlace::rl {
namespace {

// task_seed -> mean reward of that task's rows.
absl::StatusOr<std::map<int64_t, double>> task_means(const std::vector<nlohmann::json>& rows, const char* side) {
  std::map<int64_t, std::pair<double, int64_t>> sums;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& r = rows[i];
    const auto seed = r.find("task_seed");
    const auto reward = r.find("reward");
    if (seed == r.end() || !seed->is_number_integer() || reward == r.end() || !reward->is_number())
      return absl::InvalidArgumentError(
          absl::StrCat(side, " evaluation, row ", i + 1, ": needs a numeric task_seed and reward"));
    auto& [sum, n] = sums[seed->get<int64_t>()];
    sum += reward->get<double>();
    ++n;
  }
  std::map<int64_t, double> means;
  for (const auto& [seed, s] : sums) means[seed] = s.first / double(s.second);
  return means;
}

}  // namespace

absl::StatusOr<PairedDifference> paired_reward_difference(const std::vector<nlohmann::json>& before,
                                                          const std::vector<nlohmann::json>& after) {
  auto b = task_means(before, "before");
  if (!b.ok()) return b.status();
  auto a = task_means(after, "after");
  if (!a.ok()) return a.status();
  std::vector<double> diffs;
  for (const auto& [seed, mean_after] : *a)
    if (auto it = b->find(seed); it != b->end()) diffs.push_back(mean_after - it->second);
  PairedDifference d;
  d.tasks = static_cast<int64_t>(diffs.size());
  if (diffs.empty()) return d;
  for (double x : diffs) d.mean += x;
  d.mean /= double(diffs.size());
  if (diffs.size() < 2) {
    d.standard_error = NAN;
    return d;
  }
  double ss = 0;
  for (double x : diffs) ss += (x - d.mean) * (x - d.mean);
  d.standard_error = std::sqrt(ss / double(diffs.size() - 1) / double(diffs.size()));
  return d;
}

}  // namespace interlace::rl
