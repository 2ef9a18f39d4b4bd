#include "interlace/control/pool_worker.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "interlace/control/job_runner.h"
#include "interlace/control/job_store.h"
#include "interlace/control/presence.h"
#include "interlace/control/worker_pool.h"
#include "interlace/core/file_util.h"
#include "interlace/metrics/registry.h"
#include "interlace/rl/supervisor.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace interlace::control {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The child's load file, read into the registry entry (absent or torn: not known).
void read_load(const std::string& path, WorkerEntry& e) {
  e.running = e.waiting = -1;
  e.cache_usage = -1;
  if (e.job.empty()) return;
  auto text = core::read_file(path);
  if (!text.ok()) return;
  const auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object()) return;
  e.running = j.value("running", int64_t{-1});
  e.waiting = j.value("waiting", int64_t{-1});
  e.cache_usage = j.value("cache_usage", -1.0);
}

}  // namespace

std::string file_safe_name(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  if (out.empty() || out[0] == '.') out.insert(out.begin(), 'w');
  return out;
}

int run_pool_worker(const PoolWorkerOptions& o) {
  RedisOptions ro;
  ro.reconnect_for = std::chrono::milliseconds(60000);
  auto redis = RedisClient::connect_waiting(o.redis, ro);
  if (!redis.ok()) {
    spdlog::error("worker {}: {}", o.name, std::string(redis.status().message()));
    return 1;
  }
  WorkerPool pool(**redis, o.prefix);
  JobStore store(**redis, o.prefix);
  const std::string key_name = file_safe_name(o.name);
  const std::string load_file = (fs::path(o.dir) / ("." + key_name + ".load.json")).string();
  Presence presence(o.redis, o.prefix, o.name, "worker", [&](WorkerEntry& e) { read_load(load_file, e); });
  metrics::Registry registry;
  metrics::register_build_info(registry, /*nccl=*/false);
  metrics::Value& busy = registry.gauge("interlace_pool_worker_busy", "1 while this pool worker runs a job's rollout");
  metrics::Value& assignments =
      registry.counter("interlace_pool_worker_assignments_total", "jobs this pool worker was assigned to");
  std::unique_ptr<HealthEndpoint> endpoint;
  if (o.health_port > 0) {
    endpoint = std::make_unique<HealthEndpoint>(presence, registry);
    if (absl::Status s = endpoint->start("worker", o.health_host, o.health_port); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
  }
  spdlog::info("worker {}: in the pool, waiting for an assignment (Redis {})", o.name, o.redis.to_string());
  std::string current, finished;  // the assigned job; the one whose rollout ended with the learner's "done"
  int failures = 0;
  auto sleep = [&](double seconds) { std::this_thread::sleep_for(std::chrono::duration<double>(seconds)); };
  while (!(o.stop && o.stop())) {
    auto assigned = pool.assignment(o.name);
    if (!assigned.ok()) {
      spdlog::warn("worker {}: {}", o.name, std::string(assigned.status().message()));
      sleep(o.poll_seconds);
      continue;
    }
    if (*assigned != current) {
      current = *assigned;
      finished.clear();
      failures = 0;
      presence.set_job(current);
      if (!current.empty()) {
        assignments.inc();
        spdlog::info("worker {}: assigned to job {}", o.name, current);
      }
    }
    if (!current.empty() && current != finished) {
      // A rollout job the controller claimed for this worker: run its episodes here.
      auto job = store.get(current);
      if (job.ok() && job->kind == JobKind::kRollout) {
        if (job->state == JobState::kRunning && job->owner == o.name) {
          busy.set(1);
          const bool went_on = run_held_job(store, pool, *job,
                                            {.redis = o.redis, .prefix = o.prefix, .name = o.name, .dir = o.dir,
                                             .interlace = o.interlace, .poll_seconds = std::max(o.poll_seconds, 0.2),
                                             .stop = o.stop});
          busy.set(0);
          if (!went_on) break;
        }
        finished = current;  // ended (or not ours): idle once the assignment goes
        continue;
      }
    }
    const fs::path run_dir = fs::path(o.dir) / current / "run";
    if (current.empty() || current == finished || !fs::exists(run_dir / "endpoints.json")) {
      sleep(o.poll_seconds);
      continue;
    }
    busy.set(1);
    bool taken_back = false;
    auto last_check = Clock::now();
    auto interrupted = [&] {
      if (o.stop && o.stop()) return true;
      if (Clock::now() - last_check < std::chrono::duration<double>(o.poll_seconds)) return false;
      last_check = Clock::now();
      auto now = pool.assignment(o.name);
      taken_back = now.ok() && *now != current;
      return taken_back;
    };
    const int code = rl::run_process({o.interlace, "serve", "worker", "--run-dir", run_dir.string(), "--name", key_name,
                                      "--load-file", load_file, "--quiet"},
                                     interrupted);
    busy.set(0);
    std::error_code ec;
    fs::remove(load_file, ec);
    if (taken_back) {
      spdlog::info("worker {}: job {} took it back; stopped its rollout", o.name, current);
      (void)store.append_event(current, "workers", absl::StrCat("worker ", o.name, " stopped"));
    } else if (code == 0) {
      finished = current;  // the learner said done; idle once the assignment goes
      spdlog::info("worker {}: job {}'s learner is done", o.name, current);
    } else if (!(o.stop && o.stop())) {
      const double delay = std::min(30.0, 0.5 * double(1 << std::min(++failures, 6)));
      spdlog::warn("worker {}: the rollout of job {} ended with exit code {}; again in {:.0f} s", o.name, current, code,
                   delay);
      (void)store.append_event(current, "workers",
                               absl::StrCat("worker ", o.name, ": its rollout ended with exit code ", code, "; restarting"));
      sleep(delay);
    }
  }
  return 0;
}

}  // namespace interlace::control
