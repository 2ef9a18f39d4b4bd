// A long-lived role's presence in the control plane: its entry in the worker
// registry, renewed every 2 s on a connection of its own (a RedisClient
// serves one thread) and removed when it stops; and, when asked, an HTTP
// endpoint for probes and Prometheus (GET /healthz: 200 while the last
// heartbeat reached Redis within the entry's 10 s TTL, else 503, so
// Kubernetes restarts a process cut off from Redis; GET /metrics).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "interlace/control/redis_client.h"
#include "interlace/control/worker_registry.h"

namespace interlace::metrics {
class Registry;
}
namespace httplib {
class Server;
}

namespace interlace::control {

class Presence {
 public:
  // `load`, if set, fills the entry's load fields before each beat.
  Presence(RedisAddress redis, std::string prefix, std::string name, std::string kind,
           std::function<void(WorkerEntry&)> load = {});
  ~Presence();  // removes the entry
  // The job it works on ("": idle); said at once, not at the next beat.
  void set_job(const std::string& job);
  // Whether the last heartbeat reached Redis within the entry's TTL.
  bool fresh() const { return now_ms() - last_beat_ms_.load() < kTtlMs; }
  static int64_t now_ms();
  static constexpr int64_t kEveryMs = 2000, kTtlMs = 10000;  // five missed beats: gone

 private:
  void loop();
  const RedisAddress redis_;
  const std::string prefix_, name_, kind_;
  const std::function<void(WorkerEntry&)> load_;
  std::atomic<int64_t> last_beat_ms_{0};
  std::mutex mu_;
  std::condition_variable wake_;
  bool done_ = false;
  std::string job_;
  std::thread thread_;
};

// GET /healthz (by `presence`) and /metrics (by `registry`) on HOST:PORT.
class HealthEndpoint {
 public:
  HealthEndpoint(const Presence& presence, metrics::Registry& registry);
  ~HealthEndpoint();
  // `role` names the process in the error when the port cannot be bound.
  absl::Status start(const std::string& role, const std::string& host, int port);

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace interlace::control
