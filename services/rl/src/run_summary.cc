#include "interlace/rl/run_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "absl/strings/str_format.h"
#include "interlace/rl/eval_compare.h"

namespace interlace::rl {

using nlohmann::json;

namespace {

json num_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

// Same tasks, same sampling seeds before and after: the per-task change and
// its standard error say whether a rise is more than the draw.
json paired_change(const Evaluation& before, const Evaluation& after) {
  if (!before.ran || !after.ran) return nullptr;
  auto d = paired_reward_difference(before.rows, after.rows);
  if (!d.ok()) {
    std::fprintf(stderr, "run: comparing evaluations: %s\n", std::string(d.status().message()).c_str());
    return nullptr;
  }
  return {{"tasks", d->tasks}, {"mean", num_or_null(d->mean)}, {"standard_error", num_or_null(d->standard_error)}};
}

std::string change_text(const json& d) {
  if (!d.is_object() || d.value("tasks", int64_t{0}) < 2 || !d["mean"].is_number() || !d["standard_error"].is_number())
    return "";
  return absl::StrFormat(" (per task %+.3f, standard error %.3f over %lld tasks)", d["mean"].get<double>(),
                         d["standard_error"].get<double>(), static_cast<long long>(d["tasks"].get<int64_t>()));
}

}  // namespace

std::optional<std::string> warmup_shortfall(const JobSpec& spec, const Evaluations& before) {
  const double want = spec.sft_expect_greedy_reward;
  if (!spec.sft || want <= 0 || !before.greedy.ran || !(before.greedy.mean_reward < want)) return std::nullopt;
  return absl::StrFormat(
      "the SFT model solves %.0f%% of %d held-out tasks greedily, below the %.0f%% this job expects "
      "(sft.expect_greedy_reward): the warm-up did not reach the level the RL part needs, so RL may not raise the "
      "reward; more SFT steps or another seed may (see the README's distribution over seeds)",
      100 * before.greedy.mean_reward, before.greedy.episodes, 100 * want);
}

json run_summary(const JobSpec& spec, const RunFigures& f) {
  int64_t trajectories = 0, tokens = 0, dropped = 0;
  double dlogp = 0, stale = 0, hit = 0;
  for (const auto& r : f.metrics_rows) {
    trajectories += r.value("trajectories", int64_t{0});
    tokens += r.value("generated_tokens", int64_t{0});
    dropped += r.value("stale_dropped", int64_t{0});
    if (r.contains("mismatch")) dlogp += r["mismatch"].value("logprob_abs_diff_mean", 0.0);
    stale += r.value("staleness_mean", 0.0);
  }
  if (!f.metrics_rows.empty()) hit = f.metrics_rows.back().value("cache_hit_rate", 0.0);
  const double n = std::max<double>(1, double(f.metrics_rows.size()));
  const double s = f.rl_seconds;
  json warnings = json::array();
  if (auto w = warmup_shortfall(spec, f.before)) warnings.push_back(*w);
  return {{"job", spec.name},
          {"env", spec.env},
          {"algorithm", spec.algorithm},
          {"mode", staleness_mode_name(spec.mode)},
          {"steps", f.metrics_rows.size()},
          {"trajectories_trained", trajectories},
          {"trajectories_stale_dropped", dropped},
          {"generated_tokens", tokens},
          {"rl_seconds", s},
          {"total_seconds", f.total_seconds},
          {"tokens_per_second", s > 0 ? double(tokens) / s : 0.0},
          {"trajectories_per_second", s > 0 ? double(trajectories) / s : 0.0},
          {"eval_reward_before", num_or_null(f.before.greedy.mean_reward)},
          {"eval_reward_after", num_or_null(f.after.greedy.mean_reward)},
          {"eval_episodes", f.after.greedy.episodes},
          {"eval_episodes_before", f.before.greedy.episodes},
          {"eval_change", paired_change(f.before.greedy, f.after.greedy)},
          {"eval_sampled_reward_before", num_or_null(f.before.sampled.mean_reward)},
          {"eval_sampled_reward_after", num_or_null(f.after.sampled.mean_reward)},
          {"eval_sampled_episodes", f.after.sampled.episodes},
          {"eval_sampled_episodes_before", f.before.sampled.episodes},
          {"eval_sampled_temperature", spec.temperature},
          {"eval_sampled_change", paired_change(f.before.sampled, f.after.sampled)},
          {"logprob_abs_diff_mean", dlogp / n},
          {"staleness_mean", stale / n},
          {"cache_hit_rate", hit},
          {"run_dir", f.run_dir},
          {"final_model", f.final_model},
          {"warnings", warnings}};
}

std::string summary_text(const json& s) {
  if (s.value("warmup_only", false)) {
    std::string out = absl::StrFormat("job %s: starting model %s\n", s["job"].get<std::string>(),
                                      s.value("start_model", std::string("?")));
    if (s["eval_reward_before"].is_number())
      out += absl::StrFormat("held-out reward (%d greedy episodes): %.3f\n", s["eval_episodes_before"].get<int64_t>(),
                             s["eval_reward_before"].get<double>());
    if (s["eval_sampled_reward_before"].is_number())
      out += absl::StrFormat("held-out reward (%d episodes sampled at temperature %g): %.3f\n",
                             s["eval_sampled_episodes_before"].get<int64_t>(),
                             s["eval_sampled_temperature"].get<double>(), s["eval_sampled_reward_before"].get<double>());
    for (const auto& w : s.value("warnings", json::array())) out += "warning: " + w.get<std::string>() + "\n";
    return out;
  }
  std::string out = absl::StrFormat(
      "job %s done: %d steps, %d trajectories in %.0f s (%.1f trajectories/s, %.0f tokens/s)\n",
      s["job"].get<std::string>(), s["steps"].get<int64_t>(), s["trajectories_trained"].get<int64_t>(),
      s["rl_seconds"].get<double>(), s["trajectories_per_second"].get<double>(), s["tokens_per_second"].get<double>());
  if (s["eval_reward_before"].is_number() && s["eval_reward_after"].is_number())
    out += absl::StrFormat("held-out reward (%d greedy episodes): %.3f before -> %.3f after%s\n",
                           s["eval_episodes"].get<int64_t>(), s["eval_reward_before"].get<double>(),
                           s["eval_reward_after"].get<double>(), change_text(s["eval_change"]));
  if (s["eval_sampled_reward_before"].is_number() && s["eval_sampled_reward_after"].is_number())
    out += absl::StrFormat("held-out reward (%d episodes sampled at temperature %g): %.3f before -> %.3f after%s\n",
                           s["eval_sampled_episodes"].get<int64_t>(), s["eval_sampled_temperature"].get<double>(),
                           s["eval_sampled_reward_before"].get<double>(), s["eval_sampled_reward_after"].get<double>(),
                           change_text(s["eval_sampled_change"]));
  out += absl::StrFormat(
      "mean |dlogp| learner vs rollout %.2e, mean staleness %.2f versions, cache hit rate %.0f%%, %d stale dropped\n",
      s["logprob_abs_diff_mean"].get<double>(), s["staleness_mean"].get<double>(), 100 * s["cache_hit_rate"].get<double>(),
      s["trajectories_stale_dropped"].get<int64_t>());
  for (const auto& w : s.value("warnings", json::array())) out += "warning: " + w.get<std::string>() + "\n";
  out += absl::StrFormat("run directory: %s (report.html, metrics.jsonl, summary.json, final-model/)\n",
                         s["run_dir"].get<std::string>());
  return out;
}

}  // namespace interlace::rl
