// Helpers shared by the benchmarks: timing, output with the machine and
// command attached, locating example model configs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::bench {

// How a benchmark prints: "table" or "json", and the command line recorded
// with its figures (so they can be reproduced).
struct Common {
  std::string output = "table";
  std::string command_line;
};

// Seconds since t0 on the steady clock.
double seconds_since(std::chrono::steady_clock::time_point t0);
// Median seconds of `reps` runs of fn (after one warm-up run).
double time_median(const std::function<void()>& fn, int reps);
std::vector<float> random_vector(size_t n, uint64_t seed, float sd = 1.0f);
// Prints one JSON document (-o json) or a header naming machine and command,
// then the table.
void emit(const Common& c, const std::string& name, nlohmann::json settings, nlohmann::json results,
          const std::function<void()>& print_table);
// examples/models/NAME from the working directory or next to the build tree.
std::string find_example(const std::string& name);
// A model directory: `name` if it is one, else a fresh initialisation (random
// weights, seed 1) of the example config `name` in a subdirectory of `tmp`.
absl::StatusOr<std::string> model_dir_or_example(const std::string& name, const std::string& tmp);
// sgemm GFLOP/s on 1024^3, median of a few runs (the machine's GEMM rate).
double measure_sgemm_gflops();

// {"requests", "median_ms", "p99_ms", "max_ms"} of latencies in milliseconds (null when empty).
nlohmann::json latency_stats(std::vector<double> ms);

// Processes a benchmark started, stopped when this goes away: the last
// started first (a server outlives its clients), SIGTERM, SIGKILL after 5 s.
struct ChildProcesses {
  std::vector<int> pids;
  ChildProcesses() = default;
  ChildProcesses(const ChildProcesses&) = delete;
  ChildProcesses& operator=(const ChildProcesses&) = delete;
  ~ChildProcesses();
};

}  // namespace interlace::bench
