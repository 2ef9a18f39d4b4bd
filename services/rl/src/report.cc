#include "interlace/rl/report.h"

#include <cmath>
#include <functional>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "interlace/core/file_util.h"
#include "interlace/rl/run_layout.h"
#include "report_charts.h"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using report::duration;
using report::escape_html;
using report::number;

double num(const json& j, const std::string& key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// "0.40 -> 0.75" with what is known.
std::string before_after(const json& s, const char* before, const char* after) {
  const double b = num(s, before), a = num(s, after);
  if (!std::isfinite(b)) return "-";
  return std::isfinite(a) ? absl::StrFormat("%.3f &rarr; %.3f", b, a) : absl::StrFormat("%.3f (before RL)", b);
}

// One sentence on a paired change: its size, its standard error, and whether
// it is more than the draw (two standard errors).
std::string change_sentence(const json& s, const char* what, const char* before, const char* after, const char* change) {
  if (!s.contains(change) || !s[change].is_object()) return "";
  const double m = num(s[change], "mean"), se = num(s[change], "standard_error"), b = num(s, before), a = num(s, after);
  const double z = se > 0 ? m / se : INFINITY;
  const std::string verdict = std::abs(z) >= 2 ? (m > 0 ? "<b>RL raised it</b>, more than the draw"
                                                        : "<b>RL lowered it</b>, more than the draw")
                                               : "within the draw (under two standard errors)";
  return absl::StrFormat("<p class='headline'>%s: <b>%.3f &rarr; %.3f</b>, a change of <b>%+.3f</b> per task "
                         "(standard error %.3f, %s standard errors over %d tasks): %s.</p>",
                         what, b, a, m, se, std::isfinite(z) ? absl::StrFormat("%.1f", z) : "inf",
                         static_cast<int>(num(s[change], "tasks")), verdict);
}

std::string link_base(const ReportRun& run, const std::string& from) {
  if (from.empty()) return "";
  std::error_code ec;
  const fs::path rel = fs::relative(run.dir, from, ec);
  return ec ? run.dir + "/" : (rel.string() == "." ? "" : rel.string() + "/");
}

// The figures table: one column per run.
std::string figures_table(const std::vector<ReportRun>& runs) {
  struct Row {
    const char* label;
    std::function<std::string(const json&, const ReportRun&)> value;
  };
  auto seconds = [](const char* key) { return [key](const json& s, const ReportRun&) { return duration(num(s, key)); }; };
  auto plain = [](const char* key, const char* unit) {
    return [key, unit](const json& s, const ReportRun&) {
      const double v = num(s, key);
      return std::isfinite(v) ? absl::StrCat(report::thousands(v), unit) : std::string("-");
    };
  };
  const std::vector<Row> rows = {
      {"held-out reward, greedy", [](const json& s, const ReportRun&) { return before_after(s, "eval_reward_before", "eval_reward_after"); }},
      {"held-out reward, sampled", [](const json& s, const ReportRun&) { return before_after(s, "eval_sampled_reward_before", "eval_sampled_reward_after"); }},
      {"SFT steps taken", [](const json& s, const ReportRun& r) {
         const double v = num(s, "sft_steps_taken");
         if (std::isfinite(v)) return report::thousands(v);
         const json sft = r.config.is_object() ? r.config.value("sft", json::object()) : json::object();
         return sft.value("enabled", false) ? report::thousands(num(sft, "steps")) : std::string("-");
       }},
      {"RL steps", [](const json& s, const ReportRun& r) {
         const double v = num(s, "steps");
         return std::isfinite(v) ? report::thousands(v) : report::thousands(double(r.rows.size()));
       }},
      {"total time", seconds("total_seconds")},
      {"RL time", seconds("rl_seconds")},
      {"generated tokens", plain("generated_tokens", "")},
      {"generation rate", [](const json& s, const ReportRun&) {
         const double v = num(s, "tokens_per_second");
         return std::isfinite(v) ? absl::StrCat(report::thousands(v), " tok/s") : std::string("-");
       }},
      {"trajectories trained", plain("trajectories_trained", "")},
      {"stale trajectories dropped", plain("trajectories_stale_dropped", "")},
      {"mean staleness", [](const json& s, const ReportRun&) {
         const double v = num(s, "staleness_mean");
         return std::isfinite(v) ? absl::StrFormat("%.2f versions", v) : std::string("-");
       }},
      {"prefix cache hit rate", [](const json& s, const ReportRun&) {
         const double v = num(s, "cache_hit_rate");
         return std::isfinite(v) ? absl::StrFormat("%.1f%%", 100 * v) : std::string("-");
       }},
      {"mean |log p learner &minus; log p rollout|", [](const json& s, const ReportRun&) { return number(num(s, "logprob_abs_diff_mean")); }},
  };
  std::string html = "<table class='figures'><tr><th></th>";
  for (size_t i = 0; i < runs.size(); ++i)
    absl::StrAppendFormat(&html, "<th><span class='swatch' style='background:%s'></span>%s</th>", report::run_colour(i),
                          escape_html(runs[i].name));
  html += "</tr>";
  for (const Row& r : rows) {
    absl::StrAppend(&html, "<tr><td>", r.label, "</td>");
    for (const ReportRun& run : runs) absl::StrAppend(&html, "<td>", r.value(run.summary, run), "</td>");
    html += "</tr>";
  }
  return html + "</table>";
}

}  // namespace

absl::StatusOr<ReportRun> load_report_run(const std::string& run_dir) {
  ReportRun r;
  r.dir = fs::absolute(run_dir).lexically_normal().string();
  auto read_json = [&](const char* file) -> json {
    auto text = core::read_file(run_path(r.dir, file));
    return text.ok() ? json::parse(*text, nullptr, false) : json();
  };
  r.config = read_json("config.json");
  r.summary = read_json("summary.json");
  if (r.summary.is_discarded() || r.summary.is_null()) r.summary = read_json("warmup-summary.json");
  if (r.summary.is_discarded()) r.summary = json();
  if (r.config.is_discarded()) r.config = json();
  r.rows = read_jsonl(run_path(r.dir, "metrics.jsonl"));
  if (r.config.is_null() && r.summary.is_null() && r.rows.empty())
    return absl::NotFoundError(absl::StrCat(run_dir, ": no run here (no config.json, summary.json or metrics.jsonl)"));
  r.name = r.config.is_object() && r.config.contains("name") && r.config["name"].is_string()
               ? r.config["name"].get<std::string>()
               : fs::path(r.dir).filename().string();
  return r;
}

std::string render_report(const std::vector<ReportRun>& given, const std::string& links_from) {
  // Runs of one job share its name: tell them apart by their directories.
  std::vector<ReportRun> runs = given;
  for (ReportRun& r : runs) {
    int same = 0;
    for (const ReportRun& o : given) same += o.name == r.name;
    if (same > 1) {
      const fs::path d(r.dir);
      r.name = absl::StrCat(r.name, " (", d.parent_path().filename().string(), "/", d.filename().string(), ")");
    }
  }
  const std::string title = runs.size() == 1 ? absl::StrCat("Interlace run: ", runs[0].name)
                                             : absl::StrCat("Interlace: ", runs.size(), " runs compared");
  std::string html = absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>", escape_html(title),
      "</title><style>body{font-family:sans-serif;margin:24px auto;max-width:980px;color:#222}"
      "h2{margin-top:28px;border-bottom:1px solid #ddd}table{border-collapse:collapse}"
      "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}.headline{font-size:16px}"
      ".warning{background:#fff3cd;border:1px solid #e0c36b;padding:6px 10px}"
      ".charts{display:flex;flex-wrap:wrap;gap:12px}.swatch{display:inline-block;width:10px;height:10px;margin-right:5px}"
      "pre{background:#f6f6f6;padding:8px;overflow:auto}</style></head><body><h1>",
      escape_html(title), "</h1>");
  // The result first.
  html += "<h2>Result</h2>";
  std::vector<report::Change> changes;
  for (size_t i = 0; i < runs.size(); ++i) {
    const ReportRun& run = runs[i];
    const json& s = run.summary;
    if (runs.size() > 1) absl::StrAppendFormat(&html, "<h3><span class='swatch' style='background:%s'></span>%s</h3>",
                                               report::run_colour(i), escape_html(run.name));
    if (s.is_null()) {
      const double reward = run.rows.empty() ? NAN : num(run.rows.back(), "reward");
      absl::StrAppendFormat(&html, "<p class='headline'>Still running (or stopped early): %d RL steps so far%s.</p>",
                            static_cast<int>(run.rows.size()),
                            std::isfinite(reward) ? absl::StrFormat(", the last batch's mean reward %.3f", reward) : "");
      continue;
    }
    const std::string sampled = change_sentence(
        s, absl::StrFormat("Sampled held-out reward (the policy RL trains: %d episodes at temperature %s)",
                           static_cast<int>(num(s, "eval_sampled_episodes")), number(num(s, "eval_sampled_temperature")))
               .c_str(),
        "eval_sampled_reward_before", "eval_sampled_reward_after", "eval_sampled_change");
    const std::string greedy = change_sentence(
        s, absl::StrFormat("Greedy held-out reward (%d tasks)", static_cast<int>(num(s, "eval_episodes"))).c_str(),
        "eval_reward_before", "eval_reward_after", "eval_change");
    html += sampled + greedy;
    if (sampled.empty() && greedy.empty())
      absl::StrAppendFormat(&html, "<p class='headline'>No held-out change to report (%s): the starting model's greedy reward "
                                   "is %s.</p>",
                            s.value("warmup_only", false) ? "a warm-up-only run" : "no evaluation after RL",
                            number(num(s, "eval_reward_before")));
    for (const json& w : s.value("warnings", json::array()))
      if (w.is_string()) absl::StrAppend(&html, "<p class='warning'>", escape_html(w.get<std::string>()), "</p>");
    for (const auto& [key, label] : {std::pair{"eval_sampled_change", "sampled"}, std::pair{"eval_change", "greedy"}})
      if (s.contains(key) && s[key].is_object())
        changes.push_back({runs.size() > 1 ? absl::StrCat(run.name, ", ", label) : std::string(label),
                           num(s[key], "mean"), num(s[key], "standard_error"), i});
  }
  if (!changes.empty()) html += report::change_chart("Held-out reward after RL minus before", changes);

  html += "<h2>Figures</h2>" + figures_table(runs);

  html += "<h2>Time by phase</h2>";
  for (size_t i = 0; i < runs.size(); ++i) {
    std::vector<std::pair<std::string, double>> phases;
    for (const json& p : runs[i].summary.is_object() ? runs[i].summary.value("phase_seconds", json::array()) : json::array())
      phases.emplace_back(p.value("phase", "?"), p.value("seconds", 0.0));
    if (runs.size() > 1) absl::StrAppend(&html, "<p>", escape_html(runs[i].name), "</p>");
    html += report::phase_bar(phases);
  }

  html += "<h2>Over RL steps</h2><div class='charts'>";
  struct Plot {
    const char* title;
    const char* y_title;
    std::vector<std::string> path;
  };
  const std::vector<Plot> plots = {
      {"Mean reward of the training batches", "reward (0..1)", {"reward"}},
      {"Objective", "loss", {"loss"}},
      {"KL to the starting model (k3, per token)", "nats", {"kl"}},
      {"Gradient norm (before clipping)", "L2 norm", {"grad_norm"}},
      {"Learner vs rollout log-probs", "mean |Δ log p| (nats)", {"mismatch", "logprob_abs_diff_mean"}},
      {"KL(rollout || learner) (k3)", "nats", {"mismatch", "mismatch_k3_kl"}},
      {"Staleness of the trained tokens", "versions behind (mean)", {"staleness_mean"}},
      {"Generation rate", "generated tokens / s", {"tokens_per_second"}},
      {"Prefix cache hit rate", "fraction of prompt tokens", {"cache_hit_rate"}},
      {"Step time", "seconds", {"step_seconds"}},
  };
  for (const Plot& p : plots) {
    std::vector<report::Series> series;
    for (const ReportRun& run : runs) {
      report::Series s{run.name, {}};
      for (const json& row : run.rows) {
        const json* v = &row;
        for (const std::string& k : p.path) v = v->is_object() && v->contains(k) ? &(*v)[k] : nullptr;
        if (v && v->is_number() && row.contains("step") && row["step"].is_number())
          s.points.emplace_back(row["step"].get<double>(), v->get<double>());
      }
      series.push_back(std::move(s));
    }
    html += report::line_chart(p.title, p.y_title, series);
  }
  html += "</div>";

  html += "<h2>Files and spec</h2>";
  const std::string from = links_from.empty() ? runs[0].dir : links_from;
  for (const ReportRun& run : runs) {
    absl::StrAppend(&html, "<p><b>", escape_html(run.name), "</b> in <code>", escape_html(run.dir), "</code>: ");
    const std::string base = link_base(run, from);
    for (const char* f : {"summary.json", "config.json", "metrics.jsonl", "trained.jsonl", "dropped.jsonl", "sft-checks.jsonl",
                          "eval-before.jsonl", "eval-before-sampled.jsonl", "eval-after.jsonl", "eval-after-sampled.jsonl",
                          "final-model"})
      if (fs::exists(fs::path(run.dir) / f))
        absl::StrAppend(&html, "<a href='", escape_html(base + f), "'>", f, "</a> ");
    html += "</p>";
    if (!run.config.is_null())
      absl::StrAppend(&html, "<details><summary>the resolved job spec (config.json)</summary><pre>",
                      escape_html(run.config.dump(2)), "</pre></details>");
    if (!run.summary.is_null())
      absl::StrAppend(&html, "<details><summary>every summary field (summary.json)</summary><pre>",
                      escape_html(run.summary.dump(2)), "</pre></details>");
  }
  return html + "</body></html>\n";
}

}  // namespace interlace::rl
