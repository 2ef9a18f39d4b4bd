#include "report_charts.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace interlace::rl::report {
namespace {

// Ticks at 1, 2 or 5 times a power of ten covering [lo, hi], about n of them.
std::vector<double> nice_ticks(double lo, double hi, int n) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

std::vector<std::pair<double, double>> moving_average(const std::vector<std::pair<double, double>>& p, int window) {
  std::vector<std::pair<double, double>> out;
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    sum += p[i].second;
    if (i >= static_cast<size_t>(window)) sum -= p[i - window].second;
    const size_t n = std::min(i + 1, static_cast<size_t>(window));
    out.emplace_back(p[i].first, sum / double(n));
  }
  return out;
}

}  // namespace

const char* run_colour(size_t i) {
  static const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};
  return kColours[i % 8];
}

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "-";
  if (s < 60) return absl::StrFormat("%.1fs", s);
  const int64_t t = static_cast<int64_t>(std::llround(s));
  if (t < 3600) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%dh%02dm", t / 3600, (t % 3600) / 60);
}

std::string thousands(double v) {
  if (!std::isfinite(v)) return "-";
  std::string digits = absl::StrFormat("%.0f", std::abs(v)), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string number(double v) {
  if (!std::isfinite(v)) return "-";
  if (v != 0 && (std::abs(v) < 1e-3 || std::abs(v) >= 1e6)) return absl::StrFormat("%.2e", v);
  return absl::StrFormat("%.4g", v);
}

std::string line_chart(const std::string& title, const std::string& y_title, const std::vector<Series>& series,
                       int window) {
  constexpr double W = 470, H = 260, L = 62, R = 14, T = 40, B = 44;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  bool positive = true;
  for (const Series& s : series)
    for (auto [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      positive = positive && y > 0;
    }
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' class='chart' width='%.0f' height='%.0f' role='img' aria-label='%s'>"
      "<rect width='100%%' height='100%%' fill='#fff' stroke='#ddd'/>"
      "<text x='%.0f' y='18' font-size='13' font-weight='bold'>%s</text>",
      W, H, escape_html(title), L, escape_html(title));
  if (!std::isfinite(x0)) return svg + "<text x='70' y='120' font-size='12' fill='#888'>no data yet</text></svg>";
  const bool log_y = positive && y1 / y0 > 100;
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  double a = ty(y0), b = ty(y1);
  if (b == a) a -= 0.5, b += 0.5;
  if (x1 == x0) x1 = x0 + 1;
  auto sx = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return H - B - (ty(y) - a) / (b - a) * (H - T - B); };
  // Axes, ticks, titles.
  absl::StrAppendFormat(&svg, "<g stroke='#999'><line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f'/>"
                              "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f'/></g>",
                        L, H - B, W - R, H - B, L, T, L, H - B);
  std::vector<double> yt;
  if (log_y) {
    for (double e = std::ceil(a); e <= std::floor(b); ++e) yt.push_back(std::pow(10.0, e));
  } else {
    yt = nice_ticks(a, b, 4);
  }
  for (double v : yt) {
    const double y = sy(v);
    absl::StrAppendFormat(&svg, "<line x1='%.0f' y1='%.1f' x2='%.0f' y2='%.1f' stroke='#eee'/>"
                                "<text x='%.0f' y='%.1f' font-size='10' text-anchor='end'>%s</text>",
                          L, y, W - R, y, L - 5, y + 3, log_y ? absl::StrFormat("1e%+d", static_cast<int>(std::lround(std::log10(v)))) : number(v));
  }
  for (double v : nice_ticks(x0, x1, 5))
    absl::StrAppendFormat(&svg, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#999'/>"
                                "<text x='%.1f' y='%.0f' font-size='10' text-anchor='middle'>%s</text>",
                          sx(v), H - B, sx(v), H - B + 4, sx(v), H - B + 15, number(v));
  absl::StrAppendFormat(&svg, "<text x='%.0f' y='%.0f' font-size='11' text-anchor='middle'>RL step</text>",
                        (L + W - R) / 2, H - 8);
  absl::StrAppendFormat(&svg,
                        "<text transform='translate(14,%.0f) rotate(-90)' font-size='11' text-anchor='middle'>%s%s</text>",
                        (T + H - B) / 2, escape_html(y_title), log_y ? " (log scale)" : "");
  // Each run: raw thin, moving average thick, points with their values on hover.
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    if (s.points.empty()) continue;
    const char* c = run_colour(i);
    std::string raw, avg;
    for (auto [x, y] : s.points) absl::StrAppendFormat(&raw, "%.1f,%.1f ", sx(x), sy(y));
    for (auto [x, y] : moving_average(s.points, window)) absl::StrAppendFormat(&avg, "%.1f,%.1f ", sx(x), sy(y));
    absl::StrAppendFormat(&svg, "<polyline class='series' fill='none' stroke='%s' stroke-opacity='0.35' stroke-width='1' points='%s'/>",
                          c, raw);
    absl::StrAppendFormat(&svg, "<polyline class='average' fill='none' stroke='%s' stroke-width='2.2' points='%s'/>", c, avg);
    for (auto [x, y] : s.points)
      absl::StrAppendFormat(&svg, "<circle cx='%.1f' cy='%.1f' r='2.2' fill='%s' fill-opacity='0.5'><title>%s: step %.0f: %s</title></circle>",
                            sx(x), sy(y), c, escape_html(s.run), x, number(y));
  }
  absl::StrAppendFormat(&svg, "<text x='%.0f' y='33' font-size='10' text-anchor='end' fill='#666'>thin: each step; thick: mean of the last %d</text>",
                        W - R, window);
  return svg + "</svg>";
}

std::string xy_chart(const std::string& title, const std::string& x_title, const std::string& y_title,
                     const std::vector<ErrorSeries>& series, int log_x, bool log_y) {
  constexpr double W = 470, H = 270, L = 62, R = 14, T = 40, B = 44;
  auto tx = [&](double x) { return log_x ? std::log2(x) / (log_x == 10 ? std::log2(10.0) : 1.0) : x; };
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const ErrorSeries& s : series)
    for (const ErrorPoint& p : s.points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y) || (log_x && p.x <= 0) || (log_y && p.y <= 0)) continue;
      const double e = std::isfinite(p.se) && !log_y ? 2 * p.se : 0;
      x0 = std::min(x0, tx(p.x)), x1 = std::max(x1, tx(p.x));
      y0 = std::min(y0, ty(p.y - e)), y1 = std::max(y1, ty(p.y + e));
    }
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' class='chart' width='%.0f' height='%.0f' role='img' aria-label='%s'>"
      "<rect width='100%%' height='100%%' fill='#fff' stroke='#ddd'/>"
      "<text x='%.0f' y='18' font-size='13' font-weight='bold'>%s</text>",
      W, H, escape_html(title), L, escape_html(title));
  if (!std::isfinite(x0)) return svg + "<text x='70' y='120' font-size='12' fill='#888'>no data</text></svg>";
  // A range narrower than a few ticks (variants matched on FLOPs spend the
  // same compute within a step's rounding) is widened around its centre, so
  // equal values sit together instead of at the chart's two ends.
  const double min_span = log_x ? 0.3 : x0 == 0 && x1 == 0 ? 1.0 : std::abs(x0) * 0.02;
  if (x1 - x0 < min_span) {
    const double c = (x0 + x1) / 2;
    x0 = c - min_span / 2, x1 = c + min_span / 2;
  }
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  const double pad = (x1 - x0) * 0.05;
  x0 -= pad, x1 += pad;
  auto sx = [&](double x) { return L + (tx(x) - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return H - B - (ty(y) - y0) / (y1 - y0) * (H - T - B); };
  absl::StrAppendFormat(&svg, "<g stroke='#999'><line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f'/>"
                              "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f'/></g>",
                        L, H - B, W - R, H - B, L, T, L, H - B);
  // Ticks: powers on log axes (the value itself), nice steps on linear ones.
  // At most about six powers (every other one, or every third, when there
  // are more); a log range holding none gets its two ends.
  auto ticks = [](double lo, double hi, bool log) {
    if (!log) return nice_ticks(lo, hi, 4);
    std::vector<double> t;
    // Down from the top power, so the largest value shown is labelled.
    const double step = std::max(1.0, std::ceil((std::floor(hi) - std::ceil(lo) + 1) / 6));
    for (double e = std::floor(hi); e >= std::ceil(lo); e -= step) t.insert(t.begin(), e);
    if (t.empty()) t = {lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo)};
    return t;
  };
  // 65536 -> "64K" on a base-2 axis; number() elsewhere.
  auto label = [&](double value, bool base2) {
    const double r = std::round(value);
    if (base2 && r >= 1024 && std::fmod(r, 1024) == 0) return absl::StrCat(static_cast<int64_t>(r / 1024), "K");
    return number(value);
  };
  for (double v : ticks(y0, y1, log_y)) {
    const double value = log_y ? std::pow(10.0, v) : v, y = sy(value);
    absl::StrAppendFormat(&svg, "<line x1='%.0f' y1='%.1f' x2='%.0f' y2='%.1f' stroke='#eee'/>"
                                "<text x='%.0f' y='%.1f' font-size='10' text-anchor='end'>%s</text>",
                          L, y, W - R, y, L - 5, y + 3, label(value, false));
  }
  for (double v : ticks(x0, x1, log_x != 0)) {
    const double value = log_x ? std::pow(log_x == 10 ? 10.0 : 2.0, v) : v, x = sx(value);
    absl::StrAppendFormat(&svg, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#999'/>"
                                "<text x='%.1f' y='%.0f' font-size='10' text-anchor='middle'>%s</text>",
                          x, H - B, x, H - B + 4, x, H - B + 15, label(value, log_x == 2));
  }
  absl::StrAppendFormat(&svg, "<text x='%.0f' y='%.0f' font-size='11' text-anchor='middle'>%s%s</text>", (L + W - R) / 2,
                        H - 8, escape_html(x_title), log_x ? " (log scale)" : "");
  absl::StrAppendFormat(&svg,
                        "<text transform='translate(14,%.0f) rotate(-90)' font-size='11' text-anchor='middle'>%s%s</text>",
                        (T + H - B) / 2, escape_html(y_title), log_y ? " (log scale)" : "");
  double legend_x = L;
  for (size_t i = 0; i < series.size(); ++i) {
    std::vector<ErrorPoint> pts;
    for (const ErrorPoint& p : series[i].points)
      if (std::isfinite(p.x) && std::isfinite(p.y) && (!log_x || p.x > 0) && (!log_y || p.y > 0)) pts.push_back(p);
    std::sort(pts.begin(), pts.end(), [](const ErrorPoint& a, const ErrorPoint& b) { return a.x < b.x; });
    const char* c = run_colour(i);
    std::string line;
    for (const ErrorPoint& p : pts) absl::StrAppendFormat(&line, "%.1f,%.1f ", sx(p.x), sy(p.y));
    absl::StrAppendFormat(&svg, "<polyline fill='none' stroke='%s' stroke-width='1.8' points='%s'/>", c, line);
    for (const ErrorPoint& p : pts) {
      if (std::isfinite(p.se) && p.se > 0 && !log_y)
        absl::StrAppendFormat(&svg, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s'/>", sx(p.x), sy(p.y - 2 * p.se),
                              sx(p.x), sy(p.y + 2 * p.se), c);
      absl::StrAppendFormat(&svg, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'><title>%s: %s, %s</title></circle>", sx(p.x),
                            sy(p.y), c, escape_html(series[i].name), number(p.x),
                            std::isfinite(p.se) && p.se > 0 ? absl::StrCat(number(p.y), " +- ", number(p.se)) : number(p.y));
    }
    // The legend runs along the top, above the plot, where no line can cross it.
    absl::StrAppendFormat(&svg, "<text x='%.0f' y='%.0f' font-size='10' fill='%s'>%s</text>", legend_x, T - 8, c,
                          escape_html(series[i].name));
    legend_x += 12 + 6 * double(series[i].name.size());
  }
  return svg + "</svg>";
}

std::string change_chart(const std::string& title, const std::vector<Change>& changes) {
  constexpr double R = 20, T = 30, Row = 26;
  size_t longest = 0;
  for (const Change& c : changes) longest = std::max(longest, c.label.size());
  const double L = std::clamp(6.5 * double(longest) + 16, 90.0, 360.0), W = L + 330;  // room for the labels
  const double H = T + Row * double(changes.size()) + 34;
  double lo = 0, hi = 0;
  for (const Change& c : changes)
    lo = std::min(lo, c.mean - 2 * c.standard_error), hi = std::max(hi, c.mean + 2 * c.standard_error);
  if (hi - lo < 1e-9) hi = lo + 1;
  const double pad = 0.08 * (hi - lo);
  lo -= pad, hi += pad;
  auto sx = [&](double v) { return L + (v - lo) / (hi - lo) * (W - L - R); };
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' class='chart' width='%.0f' height='%.0f' role='img' aria-label='%s'>"
      "<rect width='100%%' height='100%%' fill='#fff' stroke='#ddd'/>"
      "<text x='10' y='18' font-size='13' font-weight='bold'>%s</text>",
      W, H, escape_html(title), escape_html(title));
  const double bottom = T + Row * double(changes.size());
  for (double v : nice_ticks(lo, hi, 5))
    absl::StrAppendFormat(&svg, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#eee'/>"
                                "<text x='%.1f' y='%.0f' font-size='10' text-anchor='middle'>%s</text>",
                          sx(v), T - 4, sx(v), bottom, sx(v), bottom + 13, number(v));
  absl::StrAppendFormat(&svg, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#333'/>", sx(0), T - 4, sx(0), bottom);
  for (size_t i = 0; i < changes.size(); ++i) {
    const Change& c = changes[i];
    const double y = T + Row * double(i) + Row / 2;
    const char* col = run_colour(c.run);
    absl::StrAppendFormat(&svg, "<text x='%.0f' y='%.1f' font-size='11' text-anchor='end'>%s</text>", L - 8, y + 4,
                          escape_html(c.label));
    absl::StrAppendFormat(&svg, "<rect class='bar' x='%.1f' y='%.1f' width='%.1f' height='12' fill='%s' fill-opacity='0.6'>"
                                "<title>%s: %+.3f, standard error %.3f</title></rect>",
                          std::min(sx(0), sx(c.mean)), y - 6, std::abs(sx(c.mean) - sx(0)), col, escape_html(c.label), c.mean,
                          c.standard_error);
    absl::StrAppendFormat(&svg, "<g stroke='#222'><line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f'/>"
                                "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f'/><line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f'/></g>",
                          sx(c.mean - 2 * c.standard_error), y, sx(c.mean + 2 * c.standard_error), y,
                          sx(c.mean - 2 * c.standard_error), y - 5, sx(c.mean - 2 * c.standard_error), y + 5,
                          sx(c.mean + 2 * c.standard_error), y - 5, sx(c.mean + 2 * c.standard_error), y + 5);
  }
  absl::StrAppendFormat(&svg, "<text x='%.0f' y='%.0f' font-size='10' fill='#666'>per-task change; whiskers: &#177;2 standard errors</text>",
                        L, H - 6);
  return svg + "</svg>";
}

std::string phase_bar(const std::vector<std::pair<std::string, double>>& phases) {
  constexpr double W = 940, H = 58, L = 4, R = 4;
  double total = 0;
  for (const auto& [name, s] : phases) total += std::max(0.0, s);
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' class='chart' width='%.0f' height='%.0f' role='img' aria-label='time by phase'>",
      W, H);
  if (total <= 0) return svg + "<text x='10' y='30' font-size='12' fill='#888'>no phases recorded</text></svg>";
  static const char* kColours[] = {"#c7c7c7", "#9edae5", "#aec7e8", "#1f77b4", "#98df8a", "#ffbb78"};
  double x = L;
  for (size_t i = 0; i < phases.size(); ++i) {
    const double w = std::max(0.0, phases[i].second) / total * (W - L - R);
    absl::StrAppendFormat(&svg, "<rect x='%.1f' y='4' width='%.1f' height='24' fill='%s'><title>%s: %s</title></rect>", x, w,
                          kColours[i % 6], escape_html(phases[i].first), duration(phases[i].second));
    if (w > 70)
      absl::StrAppendFormat(&svg, "<text x='%.1f' y='21' font-size='11'>%s</text>", x + 4, escape_html(phases[i].first));
    absl::StrAppendFormat(&svg, "<text x='%.1f' y='44' font-size='10' fill='#333'>%s</text>", x + 2,
                          w > 40 ? duration(phases[i].second) : "");
    x += w;
  }
  return svg + "</svg>";
}

}  // namespace interlace::rl::report
