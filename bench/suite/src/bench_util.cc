#include "interlace/bench/bench_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "interlace/kernels/gemm.h"
#include "interlace/model/model_init.h"
#include "interlace/bench/machine_info.h"

namespace interlace::bench {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

using nlohmann::json;
using Clock = std::chrono::steady_clock;


double time_median(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<float> random_vector(size_t n, uint64_t seed, float sd) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void emit(const Common& c, const std::string& name, json settings, json results,
          const std::function<void()>& print_table) {
  if (c.output == "json") {
    json doc = {{"benchmark", name},  {"command", c.command_line}, {"machine", machine_info()},
                {"settings", settings}, {"results", results}};
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    json m = machine_info();
    std::printf("# %s on %s (%d threads), %s\n# command: %s\n", name.c_str(),
                m["cpu"].get<std::string>().c_str(), m["omp_threads"].get<int>(),
                m["date"].get<std::string>().c_str(), c.command_line.c_str());
    print_table();
  }
}

std::string find_example(const std::string& name) {
  namespace fs = std::filesystem;
  if (fs::exists(name)) return name;
  const fs::path rel = fs::path("examples/models") / name;
  if (fs::exists(rel)) return rel.string();
  char exe[4096] = {0};
  if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) > 0) {
    const fs::path p = fs::path(exe).parent_path() / "../.." / rel;
    if (fs::exists(p)) return fs::canonical(p).string();
  }
  return name;
}

absl::StatusOr<std::string> model_dir_or_example(const std::string& name, const std::string& tmp) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(name) / "config.json")) return name;
  const std::string config = find_example(name);
  if (!fs::exists(config)) return absl::NotFoundError(absl::StrCat(name, ": neither a model directory nor an example config"));
  const std::string dir = (fs::path(tmp) / fs::path(name).stem()).string();
  if (absl::Status s = model::init_model_dir({.config_path = config, .out_dir = dir, .seed = 1}); !s.ok()) return s;
  return dir;
}

double measure_sgemm_gflops() {
  const int64_t n = 1024;
  std::vector<float> a = random_vector(n * n, 1), b = random_vector(n * n, 2), y(n * n);
  const double t = time_median([&] { kernels::sgemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, y.data(), n); }, 5);
  return 2.0 * double(n) * n * n / t / 1e9;
}

json latency_stats(std::vector<double> ms) {
  if (ms.empty()) return nullptr;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * double(ms.size())))]; };
  return {{"requests", ms.size()}, {"median_ms", at(0.5)}, {"p99_ms", at(0.99)}, {"max_ms", ms.back()}};
}

ChildProcesses::~ChildProcesses() {
  std::reverse(pids.begin(), pids.end());
  for (int p : pids) ::kill(p, SIGTERM);
  for (int p : pids) {
    for (int i = 0; i < 50 && ::waitpid(p, nullptr, WNOHANG) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
}

}  // namespace interlace::bench
