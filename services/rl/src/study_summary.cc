#include "interlace/rl/study_summary.h"

#include <cmath>
#include <map>
#include <set>

namespace interlace::rl {
namespace {

using nlohmann::json;

struct Moments {
  double mean = 0, se = NAN;
};

// Mean and standard error of the mean (sample standard deviation / sqrt n).
Moments moments(const std::vector<double>& v) {
  Moments m;
  if (v.empty()) return {NAN, NAN};
  for (double x : v) m.mean += x;
  m.mean /= double(v.size());
  if (v.size() < 2) return m;
  double ss = 0;
  for (double x : v) ss += (x - m.mean) * (x - m.mean);
  m.se = std::sqrt(ss / double(v.size() - 1) / double(v.size()));
  return m;
}

// j[key], or an empty object when j has no such member.
const json& member(const json& j, const std::string& key) {
  static const json empty = json::object();
  if (!j.is_object()) return empty;
  const auto it = j.find(key);
  return it != j.end() ? *it : empty;
}

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

double run_mean(const json& episodes) {
  double sum = 0;
  for (const auto& [key, r] : episodes.items()) sum += r.get<double>();
  return episodes.empty() ? NAN : sum / double(episodes.size());
}

std::string pair_key(const json& row) { return row.value("task", std::string()) + "\n" + std::to_string(row.value("seed", int64_t{0})); }

}  // namespace

json summarise_study(const json& table, const std::string& reference) {
  std::vector<std::string> order;  // variants in the table's order
  std::map<std::string, std::vector<const json*>> by_variant;
  std::vector<std::string> sets;
  std::set<std::string> seen_sets;
  // The table's own order of sets first (held-out greedy, sampled, the
  // evaluation environments as the spec lists them), then any others.
  if (table.contains("sets") && table["sets"].is_array())
    for (const json& set : table["sets"])
      if (set.is_string() && seen_sets.insert(set.get<std::string>()).second) sets.push_back(set.get<std::string>());
  for (const json& row : member(table, "rows")) {
    const std::string v = row.value("variant", std::string());
    if (!by_variant.contains(v)) order.push_back(v);
    by_variant[v].push_back(&row);
    for (const auto& [set, episodes] : member(row, "rewards").items())
      if (seen_sets.insert(set).second) sets.push_back(set);
  }
  // The reference's rows by (task, seed): what each other run is paired with.
  std::map<std::string, const json*> reference_rows;
  for (const json* row : by_variant[reference]) reference_rows[pair_key(*row)] = row;

  json variants = json::array();
  for (const std::string& v : order) {
    const auto& rows = by_variant[v];
    const json& first = *rows.front();
    json out = {{"variant", v}, {"runs", rows.size()}};
    for (const char* k : {"parameters", "training_flops_per_token", "sft_steps"}) out[k] = first.contains(k) ? first[k] : json(nullptr);
    for (const char* k : {"sft_steps_taken", "sft_training_flops"}) {
      std::vector<double> xs;
      for (const json* row : rows)
        if (row->contains(k) && (*row)[k].is_number()) xs.push_back((*row)[k].get<double>());
      out[k] = xs.empty() ? json(nullptr) : num(moments(xs).mean);
    }
    json rewards = json::object(), versus = json::object();
    for (const std::string& set : sets) {
      std::vector<double> means, diffs, episode_diffs;
      int64_t higher = 0, lower = 0;
      for (const json* row : rows) {
        const json& episodes = member(member(*row, "rewards"), set);
        if (episodes.empty()) continue;
        means.push_back(run_mean(episodes));
        auto ref = reference_rows.find(pair_key(*row));
        if (v == reference || ref == reference_rows.end()) continue;
        const json& ref_episodes = member(member(*ref->second, "rewards"), set);
        // Only the episodes both runs played (the same held-out task and sample).
        double d = 0;
        int64_t n = 0;
        for (const auto& [key, r] : episodes.items()) {
          if (!ref_episodes.contains(key)) continue;
          const double e = r.get<double>() - ref_episodes[key].get<double>();
          episode_diffs.push_back(e);
          d += e;
          ++n;
        }
        if (n == 0) continue;
        diffs.push_back(d / double(n));
        higher += d > 0;
        lower += d < 0;
      }
      if (means.empty()) continue;
      const Moments m = moments(means);
      rewards[set] = {{"mean", num(m.mean)},
                      {"se", num(m.se)},
                      {"min", *std::min_element(means.begin(), means.end())},
                      {"max", *std::max_element(means.begin(), means.end())},
                      {"runs", means.size()}};
      if (!diffs.empty()) {
        const Moments d = moments(diffs);
        versus[set] = {{"diff", num(d.mean)}, {"se", num(d.se)},   {"pairs", diffs.size()},
                       {"higher", higher},    {"lower", lower}, {"episodes", episode_diffs.size()}};
      }
    }
    out["rewards"] = rewards;
    if (v != reference) out["vs_reference"] = versus;
    // Other figures: the mean over the runs that have them.
    std::map<std::string, std::vector<double>> figures;
    for (const json* row : rows)
      for (const auto& [k, x] : member(*row, "figures").items())
        if (x.is_number() && std::isfinite(x.get<double>())) figures[k].push_back(x.get<double>());
    json f = json::object();
    for (const auto& [k, xs] : figures) f[k] = num(moments(xs).mean);
    out["figures"] = f;
    variants.push_back(out);
  }
  return {{"reference", reference}, {"sets", sets}, {"variants", variants}};
}

}  // namespace interlace::rl
