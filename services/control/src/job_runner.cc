#include "interlace/control/job_runner.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "interlace/control/job_store.h"
#include "interlace/rl/local_run.h"
#include "spdlog/spdlog.h"

namespace interlace::control {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string reward_text(const nlohmann::json& summary, const char* key) {
  return summary.contains(key) && summary[key].is_number() ? absl::StrCat(summary[key].get<double>()) : "-";
}

// Runs one claimed job to its end; false when the runner was told to stop
// (the job stays running under this runner's name, to be resumed).
bool run_one(JobStore& store, const JobRecord& job, const JobRunnerOptions& o) {
  const fs::path home = fs::path(o.dir) / job.id;
  const fs::path spec = home / "job.yaml", run_dir = home / "run";
  std::error_code ec;
  fs::create_directories(home, ec);
  if (!fs::exists(spec)) std::ofstream(spec) << job.spec;
  const bool resume = fs::exists(run_dir);
  (void)store.append_event(job.id, "runner", absl::StrCat(resume ? "resuming" : "starting", " on ", o.name, " in ",
                                                          run_dir.string()));
  spdlog::info("runner {}: {} job {} ({})", o.name, resume ? "resuming" : "starting", job.id, job.name);
  bool cancelled = false, stopped = false;
  auto last_check = Clock::now();
  auto interrupted = [&] {
    if (o.stop && o.stop()) return stopped = true;
    if (Clock::now() - last_check < std::chrono::duration<double>(o.poll_seconds)) return false;
    last_check = Clock::now();
    auto now = store.get(job.id);
    cancelled = now.ok() && now->state == JobState::kCancelled;
    return cancelled;
  };
  auto result = rl::run_local_job({.job = spec.string(),
                                   .run_dir = run_dir.string(),
                                   .interlace = o.interlace,
                                   .resume = resume,
                                   .quiet = true,
                                   .interrupted = interrupted});
  if (stopped) {
    (void)store.append_event(job.id, "runner", absl::StrCat("runner ", o.name, " stopped; the job resumes when it restarts"));
    return false;
  }
  if (cancelled) {
    (void)store.append_event(job.id, "runner", "stopped: the job was cancelled");
    spdlog::info("runner {}: job {} cancelled, stopped", o.name, job.id);
    return true;
  }
  std::string failure;
  if (!result.ok()) failure = std::string(result.status().message());
  else if (result->exit_code != 0) failure = absl::StrCat("the job's services ended with exit code ", result->exit_code,
                                                          " (see ", run_dir.string(), ")");
  if (!failure.empty()) {
    auto t = store.transition(job.id, JobState::kFailed, failure, o.name);
    spdlog::warn("runner {}: job {} failed: {}", o.name, job.id, failure);
    if (!t.ok()) spdlog::warn("runner {}: could not record it: {}", o.name, std::string(t.status().message()));
    return true;
  }
  const nlohmann::json& s = result->summary;
  (void)store.append_event(job.id, "result",
                           absl::StrCat("held-out reward ", reward_text(s, "eval_reward_before"), " -> ",
                                        reward_text(s, "eval_reward_after"), " (greedy); summary in ",
                                        (run_dir / "summary.json").string()));
  auto t = store.transition(job.id, JobState::kSucceeded, "", o.name);
  if (!t.ok()) spdlog::warn("runner {}: job {} finished but could not be marked: {}", o.name, job.id, std::string(t.status().message()));
  spdlog::info("runner {}: job {} succeeded", o.name, job.id);
  return true;
}

}  // namespace

int run_jobs(const JobRunnerOptions& o) {
  RedisOptions ro;
  ro.reconnect_for = std::chrono::milliseconds(60000);
  auto redis = RedisClient::connect_waiting(o.redis, ro);
  if (!redis.ok()) {
    spdlog::error("runner {}: {}", o.name, std::string(redis.status().message()));
    return 1;
  }
  JobStore store(**redis, o.prefix);
  // First what this runner held when it stopped or died.
  auto jobs = store.list(10000);
  if (jobs.ok())
    for (const JobRecord& j : *jobs)
      if (j.state == JobState::kRunning && j.owner == o.name && j.kind == JobKind::kTrain)
        if (!run_one(store, j, o)) return 0;
  spdlog::info("runner {}: waiting for train jobs (Redis {})", o.name, o.redis.to_string());
  while (!(o.stop && o.stop())) {
    auto job = store.claim(JobKind::kTrain, o.name);
    if (!job.ok()) {
      spdlog::warn("runner {}: {}", o.name, std::string(job.status().message()));
    } else if (job->has_value()) {
      if (!run_one(store, **job, o)) return 0;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o.poll_seconds));
  }
  return 0;
}

}  // namespace interlace::control
