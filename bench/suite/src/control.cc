// `interlace bench control`: the control plane as a deployment runs it, as
// separate processes on loopback: a redis-server (AOF, fsync always), one
// controller, and later one job runner. Measures (1) submit, status and
// cancel latency with many concurrent HTTP clients against the one
// controller, and (2) the time from submitting a rollout job, with a runner
// free, to its first trajectory on disk; then the same with a free pool
// worker instead (the controller assigns the job to it).
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "interlace/bench/suites.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/supervisor.h"

namespace interlace::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr const char* kToken = "bench-control-token";

// `name` on $PATH (posix_spawn wants a path).
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    const fs::path p = fs::path(std::string(dir)) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

bool wait_until(const std::function<bool()>& ready, double seconds) {
  const auto t0 = Clock::now();
  while (seconds_since(t0) < seconds) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace

absl::Status run_bench_control(const Common& c, const ControlBenchArgs& a) {
  const std::string redis_bin = on_path("redis-server");
  if (redis_bin.empty()) return absl::FailedPreconditionError("redis-server is not on PATH (scripts/install-deps.sh installs it)");
  auto ports = rl::pick_free_ports("127.0.0.1", 2);
  if (!ports.ok()) return ports.status();
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("interlace-bench-control-", ::getpid());
  fs::create_directories(dir / "jobs");
  ChildProcesses children;
  const std::string redis = absl::StrCat("127.0.0.1:", (*ports)[0]), listen = absl::StrCat("127.0.0.1:", (*ports)[1]);
  children.pids.push_back(rl::spawn_process({redis_bin, "--port", std::to_string((*ports)[0]), "--bind", "127.0.0.1",
                                             "--dir", dir.string(), "--appendonly", "yes", "--appendfsync", "always",
                                             "--save", "", "--logfile", (dir / "redis.log").string()}));
  children.pids.push_back(rl::spawn_process(
      {a.interlace, "serve", "controller", "--redis", redis, "--listen", listen, "--token", kToken}));
  auto client = [&] {
    auto cl = std::make_unique<httplib::Client>("127.0.0.1", (*ports)[1]);
    cl->set_bearer_token_auth(kToken);
    cl->set_connection_timeout(5);
    cl->set_read_timeout(30);
    return cl;
  };
  if (!wait_until([&] { auto r = client()->Get("/readyz"); return r && r->status == 200; }, 20))
    return absl::UnavailableError(absl::StrCat("the controller did not become ready; see ", dir.string()));

  // (1) Latency: every client submits, reads the job back and cancels it, in turn.
  const json rollout_spec = {{"kind", "rollout"}, {"spec", "model: /nonexistent\nenv: calculator\nprompts: 1\n"}};
  std::vector<double> submit_ms, status_ms, cancel_ms;
  std::mutex mu;
  std::atomic<int64_t> errors{0};
  const auto t_load = Clock::now();
  std::vector<std::thread> threads;
  for (int64_t i = 0; i < a.clients; ++i)
    threads.emplace_back([&] {
      auto cl = client();
      std::vector<double> s, g, x;
      for (int64_t k = 0; k < a.requests; ++k) {
        auto t = Clock::now();
        auto r = cl->Post("/v1/jobs", rollout_spec.dump(), "application/json");
        s.push_back(1e3 * seconds_since(t));
        if (!r || r->status != 201) {
          ++errors;
          continue;
        }
        const std::string id = json::parse(r->body)["id"];
        t = Clock::now();
        r = cl->Get("/v1/jobs/" + id);
        g.push_back(1e3 * seconds_since(t));
        if (!r || r->status != 200) ++errors;
        t = Clock::now();
        r = cl->Post("/v1/jobs/" + id + "/cancel", "", "application/json");
        x.push_back(1e3 * seconds_since(t));
        if (!r || r->status != 200) ++errors;
      }
      std::lock_guard<std::mutex> lock(mu);
      submit_ms.insert(submit_ms.end(), s.begin(), s.end());
      status_ms.insert(status_ms.end(), g.begin(), g.end());
      cancel_ms.insert(cancel_ms.end(), x.begin(), x.end());
    });
  for (auto& t : threads) t.join();
  const double load_s = seconds_since(t_load);
  if (submit_ms.empty() || status_ms.empty()) return absl::InternalError("no request succeeded");

  // (2) Submit to first trajectory, with a runner free: a small model, a
  // rollout job naming it, the time until its trajectories file has a line.
  const fs::path model = dir / "model";
  if (rl::run_process({a.interlace, "model", "init", "--config", find_example("tiny-hybrid.json"), "--out", model.string()}) != 0)
    return absl::InternalError("interlace model init failed");
  // Each job: submit, then wait for a whole first line of trajectories.
  auto cl = client();
  auto time_jobs = [&](std::vector<double>& first_s, std::vector<double>& claim_s) -> absl::Status {
    for (int rep = 0; rep < a.reps; ++rep) {
      // "Free": every registered runner or worker says idle.
      wait_until([&] {
        auto w = cl->Get("/v1/workers");
        if (!w || w->status != 200) return false;
        const json list = json::parse(w->body, nullptr, false).value("workers", json::array());
        return !list.empty() && std::all_of(list.begin(), list.end(), [](const json& e) { return e.value("state", "") == "idle"; });
      }, 30);
      const json job = {{"kind", "rollout"},
                        {"spec", absl::StrCat("model: ", model.string(), "\nenv: \"calculator:max_number=5,short_prompt=1\"\n",
                                              "prompts: 4\ngroup_size: 2\nmax_turns: 1\nmax_new_tokens: 16\nseed: ", rep, "\n")}};
      const auto t0 = Clock::now();
      auto r = cl->Post("/v1/jobs", job.dump(), "application/json");
      if (!r || r->status != 201) return absl::InternalError("submitting the rollout job failed");
      const std::string id = json::parse(r->body)["id"];
      const fs::path partial = dir / "jobs" / id / "trajectories.jsonl.partial", done = dir / "jobs" / id / "trajectories.jsonl";
      bool claimed = false;
      const bool got = wait_until(
          [&] {
            if (!claimed && fs::exists(dir / "jobs" / id)) claimed = true, claim_s.push_back(seconds_since(t0));
            for (const fs::path& p : {partial, done}) {
              std::ifstream in(p);
              std::string line;
              if (std::getline(in, line) && !in.eof()) return true;  // a whole first line
            }
            return false;
          },
          120);
      if (!got) return absl::DeadlineExceededError(absl::StrCat("job ", id, " wrote no trajectory in 120 s; see ", dir.string()));
      first_s.push_back(seconds_since(t0));
      wait_until([&] { auto s = cl->Get("/v1/jobs/" + id); return s && json::parse(s->body).value("state", "") != "running"; }, 60);
    }
    std::sort(first_s.begin(), first_s.end());
    std::sort(claim_s.begin(), claim_s.end());
    return absl::OkStatus();
  };
  // (2a) A runner claims the job itself (it polls every 50 ms).
  const pid_t runner = rl::spawn_process({a.interlace, "serve", "runner", "--redis", redis, "--dir",
                                          (dir / "jobs").string(), "--name", "bench-runner", "--poll", "0.05"});
  children.pids.push_back(runner);
  std::vector<double> first_s, claim_s;
  if (absl::Status st = time_jobs(first_s, claim_s); !st.ok()) return st;
  ::kill(runner, SIGTERM);
  ::waitpid(runner, nullptr, 0);
  children.pids.pop_back();
  // (2b) A pool worker: the controller's scheduling pass (every 500 ms)
  // claims the job for it and assigns it; the worker polls its assignment.
  children.pids.push_back(rl::spawn_process({a.interlace, "serve", "worker", "--redis", redis, "--dir",
                                             (dir / "jobs").string(), "--name", "bench-worker", "--poll", "0.05"}));
  std::vector<double> pool_first_s, pool_claim_s;
  if (absl::Status st = time_jobs(pool_first_s, pool_claim_s); !st.ok()) return st;
  const json results = {{"submit", latency_stats(submit_ms)},
                        {"status", latency_stats(status_ms)},
                        {"cancel", latency_stats(cancel_ms)},
                        {"requests_per_second", double(submit_ms.size() + status_ms.size() + cancel_ms.size()) / load_s},
                        {"errors", errors.load()},
                        {"submit_to_claim_seconds_median", claim_s.empty() ? 0.0 : claim_s[claim_s.size() / 2]},
                        {"submit_to_first_trajectory_seconds_median", first_s[first_s.size() / 2]},
                        {"submit_to_first_trajectory_seconds", first_s},
                        {"pool_submit_to_claim_seconds_median", pool_claim_s.empty() ? 0.0 : pool_claim_s[pool_claim_s.size() / 2]},
                        {"pool_submit_to_first_trajectory_seconds_median", pool_first_s[pool_first_s.size() / 2]},
                        {"pool_submit_to_first_trajectory_seconds", pool_first_s}};
  std::error_code ec;
  fs::remove_all(dir, ec);
  emit(c, "control", {{"clients", a.clients}, {"requests_per_client", a.requests}, {"reps", a.reps}}, results, [&] {
    std::printf("one controller, local redis-server (AOF, fsync always), %lld concurrent clients x %lld jobs each\n",
                static_cast<long long>(a.clients), static_cast<long long>(a.requests));
    for (const char* k : {"submit", "status", "cancel"})
      std::printf("  %-7s median %6.2f ms  p99 %7.2f ms  (%lld requests)\n", k, results[k]["median_ms"].get<double>(),
                  results[k]["p99_ms"].get<double>(), static_cast<long long>(results[k]["requests"].get<int64_t>()));
    std::printf("  %.0f requests/s, %lld errors\n", results["requests_per_second"].get<double>(),
                static_cast<long long>(errors.load()));
    std::printf("submit -> claimed by a free runner: median %.2f s; -> first trajectory on disk: median %.2f s (%d jobs)\n",
                results["submit_to_claim_seconds_median"].get<double>(),
                results["submit_to_first_trajectory_seconds_median"].get<double>(), a.reps);
    std::printf("submit -> assigned to a free pool worker: median %.2f s; -> first trajectory on disk: median %.2f s\n",
                results["pool_submit_to_claim_seconds_median"].get<double>(),
                results["pool_submit_to_first_trajectory_seconds_median"].get<double>());
  });
  return absl::OkStatus();
}

}  // namespace interlace::bench
