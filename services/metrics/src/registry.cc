#include "interlace/metrics/registry.h"

#include "prometheus/text_serializer.h"

namespace interlace::metrics {
namespace {

prometheus::Labels to_map(const Labels& labels) { return prometheus::Labels(labels.begin(), labels.end()); }

std::string key(const std::string& name, const Labels& labels) {
  std::string k = name;
  for (const auto& [l, v] : to_map(labels)) k += "\x1f" + l + "=" + v;  // sorted, unambiguous
  return k;
}

}  // namespace

void Value::add(double x) {
  if (counter_) {
    counter_->Increment(x);
  } else {
    gauge_->Increment(x);
  }
}

void Value::set(double x) {
  if (gauge_) {
    gauge_->Set(x);
    return;
  }
  std::lock_guard<std::mutex> lock(set_mu_);
  if (const double d = x - counter_->Value(); d > 0) counter_->Increment(d);
}

Registry::Registry() : registry_(std::make_shared<prometheus::Registry>()) {}

// prometheus-cpp's registry merges families registered again under one name
// (InsertBehavior::Merge), and a family's Add returns the existing series
// for labels it has: both are idempotent, so only our Value handles need a map.
template <typename Series>
Value& Registry::series(const std::string& name, const Labels& labels, Series&& add) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = values_[key(name, labels)];
  if (!slot) slot = std::make_unique<Value>(add());
  return *slot;
}

Value& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  return series(name, labels, [&]() -> prometheus::Counter& {
    return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(to_map(labels));
  });
}

Value& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  return series(name, labels, [&]() -> prometheus::Gauge& {
    return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(to_map(labels));
  });
}

prometheus::Histogram& Registry::histogram(const std::string& name, const std::string& help,
                                           const std::vector<double>& buckets, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_).Add(to_map(labels), buckets);
}

std::string Registry::render() const { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

const std::vector<double>& seconds_buckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,    5,     10,   25,    60,   120, 300, 600};
  return b;
}

}  // namespace interlace::metrics
