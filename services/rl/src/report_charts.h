// The report's charts as inline SVG, and its number formatting. Private to
// report.cc; kept apart so the page's structure reads on its own.
#pragma once

#include <string>
#include <vector>

namespace interlace::rl::report {

// A series of one run: (step, value) points, drawn in that run's colour.
struct Series {
  std::string run;
  std::vector<std::pair<double, double>> points;
};

const char* run_colour(size_t i);
std::string escape_html(const std::string& s);

// "12m41s", "1h02m", "8.4s".
std::string duration(double seconds);
// 1234567 -> "1,234,567".
std::string thousands(double v);
// Four significant figures, or scientific notation where that reads better.
std::string number(double v);

// Values over RL steps: each series raw (thin) and its moving average over
// `window` steps (thick), x ticks, y ticks, axis titles; log y when every
// value is positive and they span more than two decades; hover gives the values.
std::string line_chart(const std::string& title, const std::string& y_title, const std::vector<Series>& series,
                       int window = 5);

// Paired changes with an interval of two standard errors either side and the
// zero line: one bar per (label, mean, standard error).
struct Change {
  std::string label;
  double mean, standard_error;
  size_t run;  // colour
};
std::string change_chart(const std::string& title, const std::vector<Change>& changes);

// Points with error bars, one series per name, joined in x order: a study's
// reward against context length, hops or compute, memory against context
// length. Whiskers: +-2 standard errors (none where the error is 0 or NaN).
// Log axes draw ticks at powers of ten (of two for x when `log_x` is 2).
struct ErrorPoint {
  double x, y, se;
};
struct ErrorSeries {
  std::string name;
  std::vector<ErrorPoint> points;
};
std::string xy_chart(const std::string& title, const std::string& x_title, const std::string& y_title,
                     const std::vector<ErrorSeries>& series, int log_x = 0, bool log_y = false);

// One stacked bar of phases and their seconds.
std::string phase_bar(const std::vector<std::pair<std::string, double>>& phases);

}  // namespace interlace::rl::report
