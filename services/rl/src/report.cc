#include "interlace/rl/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace interlace::rl {
namespace {

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Value at a JSON pointer-ish path "a/b", NaN when absent or not a number.
double at(const nlohmann::json& row, const std::string& path) {
  const nlohmann::json* j = &row;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const std::string key = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!j->is_object() || !j->contains(key)) return NAN;
    j = &(*j)[key];
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return j->is_number() ? j->get<double>() : NAN;
}

std::string plot(const std::string& title, const std::string& path, const std::vector<nlohmann::json>& rows) {
  constexpr double W = 460, H = 200, L = 56, R = 12, T = 26, B = 28;
  std::vector<std::pair<double, double>> pts;
  for (const auto& r : rows) {
    const double x = at(r, "step"), y = at(r, path);
    if (std::isfinite(x) && std::isfinite(y)) pts.emplace_back(x, y);
  }
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' role='img' aria-label='%s'>"
      "<rect width='100%%' height='100%%' fill='#fff' stroke='#ccc'/>"
      "<text x='%.0f' y='17' font-size='13' font-family='sans-serif'>%s</text>",
      W, H, escape_html(title), L, escape_html(title));
  if (pts.empty()) return svg + "<text x='60' y='100' font-size='12' fill='#888'>no data</text></svg>";
  double x0 = pts.front().first, x1 = pts.back().first, y0 = pts[0].second, y1 = pts[0].second;
  for (auto [x, y] : pts) y0 = std::min(y0, y), y1 = std::max(y1, y);
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  auto sx = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  absl::StrAppendFormat(&svg,
                        "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='#999'/>"
                        "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='#999'/>",
                        L, H - B, W - R, H - B, L, T, L, H - B);
  absl::StrAppendFormat(&svg,
                        "<text x='%.0f' y='%.0f' font-size='10' text-anchor='end' font-family='monospace'>%.4g</text>"
                        "<text x='%.0f' y='%.0f' font-size='10' text-anchor='end' font-family='monospace'>%.4g</text>"
                        "<text x='%.0f' y='%.0f' font-size='10' font-family='monospace'>step %.0f</text>"
                        "<text x='%.0f' y='%.0f' font-size='10' text-anchor='end' font-family='monospace'>%.0f</text>",
                        L - 4, T + 8, y1, L - 4, H - B, y0, L, H - 8, x0, W - R, H - 8, x1);
  std::string points;
  for (auto [x, y] : pts) absl::StrAppendFormat(&points, "%.1f,%.1f ", sx(x), sy(y));
  absl::StrAppendFormat(&svg, "<polyline fill='none' stroke='#1f77b4' stroke-width='1.8' points='%s'/>", points);
  for (auto [x, y] : pts) absl::StrAppendFormat(&svg, "<circle cx='%.1f' cy='%.1f' r='2' fill='#1f77b4'/>", sx(x), sy(y));
  return svg + "</svg>";
}

}  // namespace

std::string render_report(const std::string& title, const nlohmann::json& summary,
                          const std::vector<nlohmann::json>& rows) {
  std::string html = absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>", escape_html(title),
      "</title><style>body{font-family:sans-serif;margin:24px;max-width:1000px}"
      "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}"
      ".plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body><h1>",
      escape_html(title), "</h1><h2>Summary</h2><table>");
  for (const auto& [k, v] : summary.items())
    absl::StrAppend(&html, "<tr><th>", escape_html(k), "</th><td>", escape_html(v.is_string() ? v.get<std::string>() : v.dump()),
                    "</td></tr>");
  absl::StrAppend(&html, "</table><h2>Over steps</h2><div class='plots'>");
  const std::pair<const char*, const char*> series[] = {
      {"mean reward (training batches)", "reward"},
      {"loss", "loss"},
      {"k3 KL to the starting model (kl_coef > 0)", "kl"},
      {"mean |logp learner - logp rollout|", "mismatch/logprob_abs_diff_mean"},
      {"k3 KL(rollout || learner)", "mismatch/mismatch_k3_kl"},
      {"prefix cache hit rate", "cache_hit_rate"},
      {"staleness (versions behind, mean)", "staleness_mean"},
      {"generated tokens / s", "tokens_per_second"},
  };
  for (const auto& [name, path] : series) html += plot(name, path, rows);
  absl::StrAppend(&html, "</div><p>", rows.size(), " steps; rows from metrics.jsonl.</p></body></html>\n");
  return html;
}

}  // namespace interlace::rl
