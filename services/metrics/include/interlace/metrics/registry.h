// Prometheus metrics on prometheus-cpp (Debian's prometheus-cpp-dev 1.0.1):
// its registry, counter, gauge and histogram types, its text serializer and
// its pull exposer (civetweb). Names follow ARCHITECTURE.md: `interlace_`
// prefix, base units, counters end in `_total`; label values come from small
// fixed sets (never job, trajectory or request ids).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace interlace::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

// One series of a counter or a gauge. The services hold these by reference;
// set() on a counter mirrors a cumulative total kept elsewhere (the engine's
// cache statistics): it adds the difference, so the series never goes down.
class Value {
 public:
  explicit Value(prometheus::Counter& c) : counter_(&c) {}
  explicit Value(prometheus::Gauge& g) : gauge_(&g) {}
  void add(double x);
  void inc() { add(1); }
  void set(double x);
  double get() const { return counter_ ? counter_->Value() : gauge_->Value(); }

 private:
  prometheus::Counter* counter_ = nullptr;
  prometheus::Gauge* gauge_ = nullptr;
  std::mutex set_mu_;  // counter set(): read-then-add as one step
};

class Registry {
 public:
  Registry();
  // The same name and labels give the same series; a name keeps its first
  // help text. A name used as two types, or an invalid name, throws
  // std::invalid_argument (a programming error, found by the first test).
  Value& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Value& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  // `buckets`: upper bounds in base units, ascending (+Inf is implied).
  prometheus::Histogram& histogram(const std::string& name, const std::string& help,
                                   const std::vector<double>& buckets, const Labels& labels = {});
  std::string render() const;  // the text exposition format (0.0.4)
  std::shared_ptr<prometheus::Registry> collectable() const { return registry_; }

 private:
  // The handle for name + labels, made by `add` (returns the prometheus-cpp series) the first time.
  template <typename Series>
  Value& series(const std::string& name, const Labels& labels, Series&& add);
  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Value>> values_;  // name + labels -> series
};

// Serves GET /metrics for `registry` on host:port (0: a free port, see
// port()) with prometheus-cpp's exposer. Malformed, oversized and timed-out
// requests are answered 4xx by civetweb and counted in
// interlace_http_requests_rejected_total. civetweb serves one connection per
// thread: kThreads threads, each request read within kRequestTimeoutMs, so up
// to kThreads - 1 idle clients never delay a scrape (more delay it by up to
// that timeout, then are dropped and counted).
class MetricsExposer {
 public:
  static constexpr int kThreads = 16;
  static constexpr int kRequestTimeoutMs = 2000;
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> start(Registry& registry, const std::string& host, int port);
  ~MetricsExposer();
  int port() const { return port_; }

 private:
  MetricsExposer() = default;
  struct Callbacks;
  std::unique_ptr<Callbacks> callbacks_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

// interlace_build_info{version, commit, cuda, nccl} 1: what build a series
// came from (commit as of CMake's configure step). `nccl`: whether this build
// sends weights by NCCL (the services know; the metrics library does not).
void register_build_info(Registry& registry, bool nccl);

// Buckets for durations in seconds, from 1 ms to 10 min: latencies (time to
// first token, inter-token) at the low end, episodes and RL steps above.
const std::vector<double>& seconds_buckets();

}  // namespace interlace::metrics
