#include "interlace/metrics/registry.h"

#include <cmath>
#include <cstdio>

namespace interlace::metrics {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ",";
    s += labels[i].first + "=\"" + escape(labels[i].second) + "\"";
  }
  return s + "}";
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

Value& Registry::get(const std::string& name, const std::string& help, const char* type, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = families_[name];
  if (f.type.empty()) {
    f.help = help;
    f.type = type;
  }
  auto& slot = f.series[render_labels(labels)];
  if (!slot) slot = std::make_unique<Value>();
  return *slot;
}

Value& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  return get(name, help, "counter", labels);
}

Value& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  return get(name, help, "gauge", labels);
}

std::string Registry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    for (const auto& [labels, v] : f.series) out += name + labels + " " + number(v->get()) + "\n";
  }
  return out;
}

}  // namespace interlace::metrics
