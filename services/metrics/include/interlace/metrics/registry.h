// Prometheus metrics: counters and gauges rendered in the text exposition
// format (version 0.0.4). Debian 12 has no prometheus-cpp package, so this is
// the small part of it we need: thread-safe values, fixed label sets, HELP and
// TYPE lines. Names follow ARCHITECTURE.md: `interlace_` prefix, base units,
// counters end in `_total`.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace interlace::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Value {
 public:
  void add(double x) { v_.fetch_add(x, std::memory_order_relaxed); }
  void inc() { add(1); }
  void set(double x) { v_.store(x, std::memory_order_relaxed); }
  double get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class Registry {
 public:
  // The same name and labels give the same value; a name keeps its first help and type.
  Value& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Value& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  std::string render() const;

 private:
  struct Family {
    std::string help, type;
    std::map<std::string, std::unique_ptr<Value>> series;  // rendered label set -> value
  };
  Value& get(const std::string& name, const std::string& help, const char* type, const Labels& labels);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// interlace_build_info{version, commit, cuda, nccl} 1: what build a series
// came from (commit as of CMake's configure step). `nccl`: whether this build
// sends weights by NCCL (the services know; the metrics library does not).
void register_build_info(Registry& registry, bool nccl);

}  // namespace interlace::metrics
