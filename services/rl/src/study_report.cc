#include "interlace/rl/study_report.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "interlace/rl/study_summary.h"
#include "report_charts.h"

namespace interlace::rl {
namespace {

using nlohmann::json;
using report::escape_html;
using report::number;

constexpr char kGreedy[] = "held-out greedy";
constexpr char kSampled[] = "held-out sampled";

double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// "0.531 +- 0.042" (the standard error), or the mean alone.
std::string mean_se(const json& r) {
  if (!r.is_object() || !r.contains("mean") || !r["mean"].is_number()) return "-";
  const std::string m = absl::StrFormat("%.3f", r["mean"].get<double>());
  return r["se"].is_number() ? absl::StrFormat("%s &#177; %.3f", m, r["se"].get<double>()) : m;
}

std::string diff_se(const json& d) {
  if (!d.is_object() || !d["diff"].is_number()) return "-";
  std::string s = absl::StrFormat("%+.3f", d["diff"].get<double>());
  if (d["se"].is_number()) absl::StrAppendFormat(&s, " &#177; %.3f", d["se"].get<double>());
  absl::StrAppendFormat(&s, " <small>(higher in %lld, lower in %lld of %lld)</small>", d.value("higher", int64_t{0}),
                        d.value("lower", int64_t{0}), d.value("pairs", int64_t{0}));
  return s;
}

// "kv-retrieval:pairs=8,hops=1" -> name and options.
struct EnvSpec {
  std::string name;
  std::map<std::string, std::string> options;
};
EnvSpec parse_env(const std::string& s) {
  EnvSpec e;
  const size_t colon = s.find(':');
  e.name = s.substr(0, colon);
  if (colon == std::string::npos) return e;
  for (absl::string_view kv : absl::StrSplit(s.substr(colon + 1), ',', absl::SkipEmpty())) {
    const size_t eq = kv.find('=');
    e.options[std::string(kv.substr(0, eq))] = eq == absl::string_view::npos ? "" : std::string(kv.substr(eq + 1));
  }
  return e;
}

constexpr const char* kTrainedOn = kStudyTrainedOn;

// Options that shape only the demonstrations, not the task a model is
// evaluated on: a set that leaves them out is the same task.
bool demonstration_only(const std::string& option) { return option == "demo_guess" || option == "guess_uniform"; }

// A set's column title: an evaluation environment of the training task's
// kind by the options it changes ("notes=4"), anything else by its name.
std::string set_label(const std::string& set, const std::vector<std::string>& tasks) {
  const size_t bar = set.find(kTrainedOn);
  const std::string name = set.substr(0, bar), trained = bar == std::string::npos ? "" : set.substr(bar + std::strlen(kTrainedOn));
  const std::string task = !trained.empty() ? trained : tasks.empty() ? "" : tasks[0];
  std::string label = name;
  const EnvSpec e = parse_env(name), base = parse_env(task);
  if (name != kGreedy && name != kSampled && e.name == base.name) {
    std::vector<std::string> changed;
    for (const auto& [k, v] : e.options)
      if (!base.options.contains(k) || base.options.at(k) != v) changed.push_back(k + "=" + v);
    for (const auto& [k, v] : base.options)  // left to the environment's default
      if (!demonstration_only(k) && !e.options.contains(k)) changed.push_back("no " + k);
    if (!changed.empty()) label = absl::StrJoin(changed, ",");
  }
  return trained.empty() ? label : label + " (" + trained + ")";
}

// Reward against each option the evaluation environments vary from the task
// the model trained on, the others as trained: one chart per option and
// training task (context length is `pairs` for kv-retrieval or `notes` for
// the calculator, then hops, a calculator's numbers).
std::string generalisation_charts(const json& table, const json& summary) {
  std::vector<std::string> tasks;
  for (const json& t : table.value("tasks", json::array())) tasks.push_back(t.get<std::string>());
  if (tasks.empty() && !table.value("rows", json::array()).empty()) tasks.push_back(table["rows"][0].value("task", std::string()));
  std::string html;
  for (const std::string& task : tasks) {
    const std::string suffix = tasks.size() > 1 ? kTrainedOn + task : "";
    const EnvSpec base = parse_env(task);
    // option -> [(value, set)]; the task's own held-out greedy set is each chart's trained point.
    std::map<std::string, std::vector<std::pair<double, std::string>>> axes;
    for (const json& set : summary.value("sets", json::array())) {
      const std::string name = set.get<std::string>();
      if (!absl::EndsWith(name, suffix) || (suffix.empty() && absl::StrContains(name, kTrainedOn))) continue;
      const EnvSpec e = parse_env(name.substr(0, name.size() - suffix.size()));
      if (e.name != base.name) continue;  // also skips the held-out sets
      std::vector<std::string> differ;
      for (const auto& [k, v] : e.options)
        if (!demonstration_only(k) && (!base.options.contains(k) || base.options.at(k) != v)) differ.push_back(k);
      for (const auto& [k, v] : base.options)
        if (!demonstration_only(k) && !e.options.contains(k)) differ.push_back(k);
      double x = 0;
      if (differ.size() != 1 || !e.options.contains(differ[0]) || !absl::SimpleAtod(e.options.at(differ[0]), &x)) continue;
      axes[differ[0]].push_back({x, name});
    }
    for (auto& [option, points] : axes) {
      double trained = 0;
      const std::string at = base.options.contains(option) ? base.options.at(option) : "?";
      if (absl::SimpleAtod(at, &trained)) points.push_back({trained, kGreedy + suffix});
      std::vector<report::ErrorSeries> series;
      for (const json& v : summary["variants"]) {
        report::ErrorSeries s{v["variant"].get<std::string>(), {}};
        for (const auto& [x, set] : points)
          if (v["rewards"].contains(set)) s.points.push_back({x, num(v["rewards"][set], "mean"), num(v["rewards"][set], "se")});
        series.push_back(std::move(s));
      }
      const std::string what = option == "pairs" ? "key-value pairs in the context"
                               : option == "notes" ? "distractor lines before the question"
                                                   : option;
      html += report::xy_chart("Greedy reward vs " + option + (suffix.empty() ? "" : " (" + task + ")"),
                               what + " (trained at " + at + ")", "greedy reward, final model", series);
    }
  }
  return html;
}

std::string compute_chart(const json& table, const json& summary) {
  // The first training task's held-out greedy reward.
  const json tasks = table.value("tasks", json::array());
  const std::string set = tasks.size() > 1 ? kGreedy + (kTrainedOn + tasks[0].get<std::string>()) : std::string(kGreedy);
  std::vector<report::ErrorSeries> series;
  for (const json& v : summary["variants"]) {
    const json r = v["rewards"].value(set, json::object());
    series.push_back({v["variant"].get<std::string>(), {{num(v, "sft_training_flops"), num(r, "mean"), num(r, "se")}}});
  }
  return report::xy_chart("Quality vs training compute", "SFT training FLOPs", "held-out greedy reward after RL", series, 10);
}

std::string memory_chart(const json& table, const json& summary) {
  // In the summary's order of variants, so each keeps its colour across charts.
  const json state_bytes = table.value("state_bytes", json::object());
  std::vector<report::ErrorSeries> series;
  for (const json& v : summary["variants"]) {
    report::ErrorSeries s{v["variant"].get<std::string>(), {}};
    for (const json& p : state_bytes.value(s.name, json::array()))
      if (p.is_array() && p.size() == 2) s.points.push_back({p[0].get<double>(), p[1].get<double>(), NAN});
    series.push_back(std::move(s));
  }
  return report::xy_chart("Memory per sequence (" + table.value("state_bytes_dtypes", std::string("")) + ")",
                          "context length (tokens)", "bytes", series, 2, true);
}

}  // namespace

std::string render_study_report(const json& table, const json& summary, const std::string& links_from) {
  namespace fs = std::filesystem;
  const std::string name = table.value("study", std::string("study"));
  const std::string reference = summary.value("reference", std::string());
  const json rows = table.value("rows", json::array());
  std::set<std::string> tasks;
  std::set<int64_t> seeds;
  for (const json& r : rows) tasks.insert(r.value("task", std::string())), seeds.insert(r.value("seed", int64_t{0}));
  double max_params = 0;
  std::vector<std::string> described;
  for (const json& v : summary["variants"]) {
    max_params = std::max(max_params, num(v, "parameters"));
    described.push_back(absl::StrFormat("<b>%s</b> (%s parameters, %s training FLOPs a token, %s SFT steps)",
                                        escape_html(v["variant"].get<std::string>()), report::thousands(num(v, "parameters")),
                                        number(num(v, "training_flops_per_token")), number(num(v, "sft_steps"))));
  }
  std::string html = absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>Study ", escape_html(name), "</title><style>"
      "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}"
      "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f4f4f4}"
      "td:first-child,th:first-child{text-align:left}.chart{margin:6px}.framing{background:#f8f8f0;padding:10px 14px;"
      "border-left:4px solid #bb9}</style></head><body><h1>Study ", escape_html(name), "</h1>");
  const std::string match = table.value("match", std::string("params"));
  absl::StrAppend(
      &html, "<div class='framing'><p><b>What was compared.</b> ", absl::StrJoin(described, ", "),
      ", each trained from its own initial weights on ", escape_html(absl::StrJoin(tasks, ", ")), " with seeds ",
      absl::StrJoin(seeds, ", "), " through the same job (`interlace run`: SFT warm-up, RL, held-out evaluation), matched on ",
      match == "flops" ? absl::StrCat("training FLOPs at ", table.value("context", int64_t{0}),
                                      " tokens (each variant's SFT steps scaled so steps x FLOPs a token equal the reference's)")
                       : "parameters (the same steps for every variant)",
      ". The held-out tasks and sampling seeds are the same for every variant, so differences from <b>",
      escape_html(reference), "</b> are paired.</p>"
      "<p><b>What it shows.</b> The reward each variant reached on these tasks in this budget, how it holds on the "
      "evaluation environments (longer contexts, more hops, larger numbers: what it was not trained on), the memory a sequence holds as context grows, what storing lightning states in "
      "bf16 or fp16 costs in log-probability, and training and rollout speed on this machine.</p>"
      "<p><b>What it cannot show.</b> These are models of at most ", report::thousands(max_params),
      " parameters trained for minutes on byte tokens. Which architecture is better at scale, on other tasks or with other "
      "budgets does not follow from it: small models cross learning transitions (copying, retrieval) at steps that vary "
      "with the seed, and a budget just short of one decides a comparison. A difference within two standard errors is no "
      "difference, and with ", seeds.size() == 1 ? std::string("one seed there is none") : absl::StrCat(seeds.size(), " seeds it is itself rough"), ". Speeds are this machine's.</p></div>");

  // Per variant: rewards with standard errors over runs, paired differences.
  std::vector<std::string> sets, task_list;
  for (const json& s : summary.value("sets", json::array())) sets.push_back(s.get<std::string>());
  for (const json& t : table.value("tasks", json::array())) task_list.push_back(t.get<std::string>());
  auto header = [&](const std::string& s) {
    return absl::StrCat("<th title='", escape_html(s), "'>", escape_html(set_label(s, task_list)), "</th>");
  };
  html += "<h2>Reward (final models; mean &#177; standard error over runs)</h2><table><tr><th>variant</th><th>runs</th>";
  for (const std::string& s : sets) html += header(s);
  html += "</tr>";
  for (const json& v : summary["variants"]) {
    absl::StrAppend(&html, "<tr><td>", escape_html(v["variant"].get<std::string>()), "</td><td>", v.value("runs", 0), "</td>");
    for (const std::string& s : sets) {
      const json r = v["rewards"].value(s, json());
      const int64_t n = r.is_object() ? r.value("runs", int64_t{0}) : 0;
      // Runs behind this set: the variant's runs on its training task.
      const int64_t expected = v.value("runs", int64_t{0}) / std::max<int64_t>(1, int64_t(tasks.size()));
      absl::StrAppend(&html, "<td>", mean_se(r), n > 0 && n != expected ? absl::StrCat(" <small>(", n, " runs)</small>") : "",
                      "</td>");
    }
    html += "</tr>";
  }
  absl::StrAppend(&html, "</table><p><small>Trained on ", escape_html(absl::StrJoin(tasks, "; ")),
                  ". Held-out: tasks of that kind the model never trained on, greedy and sampled at the rollout "
                  "temperature; the other columns are the evaluation environments, named by what they change (hover "
                  "for the whole name).</small></p>");
  absl::StrAppend(&html, "<h2>Paired difference from ", escape_html(reference),
                  " (same tasks and seeds; &#177; standard error over the pairs of runs)</h2><table><tr><th>variant</th>");
  for (const std::string& s : sets) html += header(s);
  html += "</tr>";
  for (const json& v : summary["variants"]) {
    if (!v.contains("vs_reference")) continue;
    absl::StrAppend(&html, "<tr><td>", escape_html(v["variant"].get<std::string>()), "</td>");
    for (const std::string& s : sets) absl::StrAppend(&html, "<td>", diff_se(v["vs_reference"].value(s, json())), "</td>");
    html += "</tr>";
  }
  html += "</table>";

  // Other figures per variant.
  struct Col {
    const char* key;
    const char* title;
    double scale;
  };
  const Col cols[] = {{"sft_tokens_per_second", "SFT tokens/s", 1},
                      {"rollout_tokens_per_second", "RL generated tokens/s", 1},
                      {"cache_hit_rate", "prefix/state cache hit %", 100},
                      {"state_bytes_per_sequence", "bytes a sequence holds (bf16 KV)", 1},
                      {"logprob_abs_diff_mean", "rollout vs learner |dlogp|", 1},
                      {"state_drift_bf16", "bf16 states |dlogp|", 1},
                      {"state_drift_fp16", "fp16 states |dlogp|", 1}};
  html += "<h2>Figures (mean over runs)</h2><table><tr><th>variant</th>";
  for (const Col& c : cols) absl::StrAppend(&html, "<th>", c.title, "</th>");
  html += "</tr>";
  for (const json& v : summary["variants"]) {
    absl::StrAppend(&html, "<tr><td>", escape_html(v["variant"].get<std::string>()), "</td>");
    for (const Col& c : cols) absl::StrAppend(&html, "<td>", number(num(v["figures"], c.key) * c.scale), "</td>");
    html += "</tr>";
  }
  html += "</table><p><small>State drift: the final model scores its own held-out episodes back to back with its lightning "
          "states rounded to bf16 or fp16 at every turn boundary (as the prefix cache stores them) against fp32 states; "
          "no entry for a model without lightning layers. Bytes a sequence holds: at a held-out episode's mean length, what a "
          "server keeping bf16 KV rows (only the window's, in sliding-window layers) and fp32 lightning states needs, counted "
          "from the config. Interlace's engine keeps every row of a sliding-window layer today, so it holds more than this "
          "for the sliding-window variant.</small></p>";

  html += "<h2>Charts</h2><div>" + generalisation_charts(table, summary) + compute_chart(table, summary) + memory_chart(table, summary) + "</div>";

  html += "<h2>Runs</h2><table><tr><th>run</th><th>task</th><th>seed</th><th>SFT steps</th><th>greedy before &#8594; after RL</th>"
          "<th>sampled before &#8594; after RL</th><th>wall</th></tr>";
  for (const json& r : rows) {
    const std::string dir = r.value("run_dir", std::string());
    std::error_code ec;
    const std::string link = links_from.empty() ? dir : fs::relative(dir, links_from, ec).string();
    absl::StrAppend(&html, "<tr><td><a href='", escape_html(link), "/report.html'>", escape_html(r.value("variant", std::string())),
                    "</a></td><td>", escape_html(r.value("task", std::string())), "</td><td>", r.value("seed", int64_t{0}),
                    "</td><td>", number(std::isfinite(num(r, "sft_steps_taken")) ? num(r, "sft_steps_taken") : num(r, "sft_steps")),
                    "</td><td>", number(num(r, "eval_reward_before")), " &#8594; ",
                    number(num(r, "eval_reward_after")), "</td><td>", number(num(r, "eval_sampled_reward_before")), " &#8594; ",
                    number(num(r, "eval_sampled_reward_after")), "</td><td>", report::duration(num(r, "total_seconds")),
                    "</td></tr>");
  }
  html += "</table></body></html>\n";
  return html;
}

}  // namespace interlace::rl
