// Where a run keeps its files, and the ports its services listen on. The
// supervisor (`interlace run`) writes endpoints.json with the metrics ports;
// the learner adds its ZeroMQ ports once it has bound them (0 until then),
// and the workers read them there. A restarted learner binds the same ports
// again when it can, so the workers reconnect by themselves (ZeroMQ does).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct Endpoints {
  std::string host = "127.0.0.1";
  int trajectories = 0;  // learner ROUTER: trajectories in, acks out (0: not bound yet)
  int tasks = 0;         // learner ROUTER: heartbeats in, task grants out
  int weights = 0;       // learner ROUTER: weight requests in, chunks out
  int learner_metrics = 0;
  std::vector<int> worker_metrics;  // worker i serves /metrics on worker_metrics[i]
  std::string initial_model;  // the model the job starts from (after SFT)
  std::string tcp(int port) const;
};

absl::Status write_endpoints(const std::string& run_dir, const Endpoints& e);
absl::StatusOr<Endpoints> read_endpoints(const std::string& run_dir);
// `n` ports that were free a moment ago on host (bind to port 0, then close);
// with `first` > 0, the ports first .. first + n - 1, each checked free.
absl::StatusOr<std::vector<int>> pick_free_ports(const std::string& host, int n, int first = 0);
// RUN/prometheus-targets.json: the learner's and workers' /metrics as a
// Prometheus file_sd target list (label `service`: learner, worker-N). Point a
// file_sd_configs entry at it (refresh_interval 5s or less for short jobs).
absl::Status write_prometheus_targets(const std::string& run_dir, const Endpoints& e);

// Paths inside a run directory.
std::string run_path(const std::string& run_dir, const std::string& name);

// The rows of a JSONL file (lines that are not JSON are skipped; no file: none).
std::vector<nlohmann::json> read_jsonl(const std::string& path);
// Rewrites a JSONL file with only the rows `keep` accepts; returns them. A
// restarted learner cuts its logs back to the checkpoint this way.
absl::StatusOr<std::vector<nlohmann::json>> keep_jsonl_rows(const std::string& path,
                                                            const std::function<bool(const nlohmann::json&)>& keep);

}  // namespace interlace::rl
