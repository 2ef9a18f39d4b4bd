#include "interlace/control/job_runner.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "interlace/control/job_store.h"
#include "interlace/control/presence.h"
#include "interlace/control/worker_pool.h"
#include "interlace/control/worker_registry.h"
#include "interlace/metrics/registry.h"
#include "interlace/rl/local_run.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/rollout_job_spec.h"
#include "interlace/rl/supervisor.h"
#include "spdlog/spdlog.h"

namespace interlace::control {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string reward_text(const nlohmann::json& summary, const char* key) {
  return summary.contains(key) && summary[key].is_number() ? absl::StrCat(summary[key].get<double>()) : "-";
}

// How a job's run ended, whatever its kind.
struct Outcome {
  std::string failure;  // "" when it succeeded
  std::string results;  // the results file, if any
  std::string summary;  // one line for the job's events
};

// A pool learner's job: the workers it wants, then a wait for the fewest it
// can start with (false: interrupted while waiting).
bool get_workers(JobStore& store, WorkerPool& pool, const JobRecord& job, const JobRunnerOptions& o,
                 const rl::JobSpec& spec, const std::function<bool()>& interrupted) {
  const int64_t want = std::max<int64_t>(1, spec.workers);
  const int64_t min = std::clamp<int64_t>(spec.min_workers, 1, want);
  if (absl::Status s = pool.want_workers(job.id, o.name, want, min); !s.ok()) {
    spdlog::warn("learner {}: job {}: asking for workers: {}", o.name, job.id, std::string(s.message()));
    return false;
  }
  for (bool said = false;; said = true) {
    auto have = pool.assigned(job.id);
    if (have.ok() && static_cast<int64_t>(have->size()) >= min) {
      (void)store.append_event(job.id, "workers", absl::StrCat("starting the learner with ", have->size(), " worker(s)"));
      return true;
    }
    if (!said)
      (void)store.append_event(job.id, "workers", absl::StrCat("waiting for ", min, " worker(s) from the pool"));
    if (interrupted()) return false;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.poll_seconds));
  }
}

Outcome run_train(const JobRunnerOptions& o, JobStore& store, WorkerPool& pool, const JobRecord& job,
                  const fs::path& home, bool resume, const std::function<bool()>& interrupted) {
  const fs::path run_dir = home / "run";
  const bool pool_workers = o.role == RunnerRole::kLearner;
  rl::LocalRunOptions lo{.job = (home / "job.yaml").string(),
                         .run_dir = run_dir.string(),
                         .interlace = o.interlace,
                         .resume = resume,
                         .quiet = true,
                         .interrupted = interrupted,
                         .external_workers = pool_workers,
                         .host = pool_workers ? o.learner_host : ""};
  if (pool_workers) {
    lo.before_services = [&](const rl::JobSpec& spec) { return get_workers(store, pool, job, o, spec, interrupted); };
    lo.after_services = [&] { (void)pool.want_workers(job.id, o.name, 0, 0); };
  }
  auto result = rl::run_local_job(lo);
  if (!result.ok()) return {.failure = std::string(result.status().message())};
  if (result->exit_code != 0)
    return {.failure = absl::StrCat("the job's services ended with exit code ", result->exit_code, " (see ", run_dir.string(), ")")};
  Outcome out;
  const nlohmann::json& s = result->summary;
  out.summary = absl::StrCat("held-out reward ", reward_text(s, "eval_reward_before"), " -> ",
                             reward_text(s, "eval_reward_after"), " (greedy); summary in ", (run_dir / "summary.json").string());
  // The final model, as one file `interlace results` can fetch.
  const fs::path tar = home / "final-model.tar";
  if (rl::run_process({"/bin/tar", "-cf", tar.string(), "-C", run_dir.string(), "final-model"}) == 0)
    out.results = tar.string();
  else
    spdlog::warn("runner {}: could not pack {}: the job has no results to download", o.name, (run_dir / "final-model").string());
  return out;
}

// Trajectories in `path`: how many, and their mean reward.
std::string trajectories_summary(const fs::path& path) {
  const auto rows = rl::read_jsonl(path.string());
  double reward = 0;
  for (const auto& j : rows) reward += j.value("reward", 0.0);
  return absl::StrCat(rows.size(), " trajectories, mean reward ", rows.empty() ? 0.0 : reward / double(rows.size()));
}

Outcome run_rollout(JobStore& store, const JobRecord& job, const JobRunnerOptions& o, const fs::path& home,
                    const std::function<bool()>& interrupted) {
  auto spec = rl::parse_rollout_job_spec(job.spec, "spec");
  if (!spec.ok()) return {.failure = std::string(spec.status().message())};
  std::string model = spec->model;
  if (!spec->from_job.empty()) {
    auto from = store.get(spec->from_job);
    if (!from.ok()) return {.failure = absl::StrCat("from_job: ", from.status().message())};
    if (from->kind != JobKind::kTrain || from->state != JobState::kSucceeded)
      return {.failure = absl::StrCat("from_job: ", from->id, " is a ", job_kind_name(from->kind), " job that is ",
                                      job_state_name(from->state), "; it must be a train job that succeeded")};
    model = (fs::path(o.dir) / from->id / "run" / "final-model").string();
    if (!fs::exists(model))
      return {.failure = absl::StrCat("from_job: ", from->id, "'s final model is not at ", model,
                                      " (was it run by a runner with another --dir?)")};
  }
  const fs::path out = home / "trajectories.jsonl", partial = home / "trajectories.jsonl.partial";
  const int code = rl::run_process(rl::rollout_command(*spec, o.interlace, model, partial.string()), interrupted);
  if (code != 0) return {.failure = absl::StrCat("`interlace rollout` ended with exit code ", code, " (its output is in the runner's log)")};
  std::error_code ec;
  fs::rename(partial, out, ec);
  if (ec) return {.failure = absl::StrCat("cannot move the trajectories to ", out.string(), ": ", ec.message())};
  return {.results = out.string(), .summary = trajectories_summary(out)};
}

// A train job's latest RL step and its mean reward, from the learner's
// metrics.jsonl (one line per step), into the job's record.
void report_progress(JobStore& store, const JobRecord& job, const std::string& owner, const fs::path& metrics,
                     int64_t& reported_step) {
  std::ifstream in(metrics);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  if (last.empty()) return;
  const auto j = nlohmann::json::parse(last, nullptr, false);
  if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) return;
  const double reward = j.contains("reward") && j["reward"].is_number() ? j["reward"].get<double>() : NAN;
  const int64_t step = j["step"].get<int64_t>();
  // What `interlace top` shows of a training job besides the reward.
  std::map<std::string, double> stats;
  for (const char* k : {"tokens_per_second", "staleness_mean", "cache_hit_rate", "kl"})
    if (j.contains(k) && j[k].is_number()) stats[k] = j[k].get<double>();
  if (j.contains("mismatch") && j["mismatch"].is_object() && j["mismatch"].contains("logprob_abs_diff_mean") &&
      j["mismatch"]["logprob_abs_diff_mean"].is_number())
    stats["logprob_abs_diff_mean"] = j["mismatch"]["logprob_abs_diff_mean"].get<double>();
  if (step != reported_step && store.set_progress(job.id, owner, step, reward, stats).ok()) reported_step = step;
}

}  // namespace

bool run_held_job(JobStore& store, WorkerPool& pool, const JobRecord& job, const JobRunnerOptions& o) {
  const fs::path home = fs::path(o.dir) / job.id;
  std::error_code ec;
  fs::create_directories(home, ec);
  if (!fs::exists(home / "job.yaml")) std::ofstream(home / "job.yaml") << job.spec;
  const bool resume = job.kind == JobKind::kTrain && fs::exists(home / "run");
  (void)store.append_event(job.id, "runner", absl::StrCat(resume ? "resuming" : "starting", " on ", o.name, " in ",
                                                          home.string()));
  spdlog::info("runner {}: {} {} job {} ({})", o.name, resume ? "resuming" : "starting", job_kind_name(job.kind), job.id, job.name);
  bool cancelled = false, stopped = false, lost = false;
  int64_t reported_step = 0;
  auto last_check = Clock::now();
  auto interrupted = [&] {
    if (o.stop && o.stop()) return stopped = true;
    if (Clock::now() - last_check < std::chrono::duration<double>(o.poll_seconds)) return false;
    last_check = Clock::now();
    auto now = store.get(job.id);
    cancelled = now.ok() && now->state == JobState::kCancelled;
    // Requeued while this runner could not heartbeat (requeue_orphans): the
    // job is someone else's now; stop without touching its state.
    lost = now.ok() && !cancelled && (now->state != JobState::kRunning || now->owner != o.name);
    if (!cancelled && !lost && job.kind == JobKind::kTrain)
      report_progress(store, job, o.name, home / "run" / "metrics.jsonl", reported_step);
    return cancelled || lost;
  };
  const Outcome outcome = job.kind == JobKind::kTrain ? run_train(o, store, pool, job, home, resume, interrupted)
                                                      : run_rollout(store, job, o, home, interrupted);
  if (stopped) {
    (void)store.append_event(job.id, "runner", absl::StrCat("runner ", o.name, " stopped; the job resumes when it restarts"));
    return false;
  }
  if (lost) {
    (void)store.append_event(job.id, "runner", absl::StrCat("runner ", o.name, " stopped: the job was taken from it (requeued)"));
    spdlog::warn("runner {}: job {} was requeued while it ran here (missed heartbeats?); stopped", o.name, job.id);
    return true;
  }
  if (cancelled) {
    (void)store.append_event(job.id, "runner", "stopped: the job was cancelled");
    spdlog::info("runner {}: job {} cancelled, stopped", o.name, job.id);
    return true;
  }
  if (!outcome.failure.empty()) {
    auto t = store.transition(job.id, JobState::kFailed, outcome.failure, o.name);
    spdlog::warn("runner {}: job {} failed: {}", o.name, job.id, outcome.failure);
    if (!t.ok()) spdlog::warn("runner {}: could not record it: {}", o.name, std::string(t.status().message()));
    return true;
  }
  (void)store.append_event(job.id, "result",
                           outcome.results.empty() ? outcome.summary
                                                   : absl::StrCat(outcome.summary, "; `interlace results ", job.id,
                                                                  " --out FILE` downloads ", fs::path(outcome.results).filename().string()));
  auto t = store.transition(job.id, JobState::kSucceeded, "", o.name, outcome.results);
  if (!t.ok()) spdlog::warn("runner {}: job {} finished but could not be marked: {}", o.name, job.id, std::string(t.status().message()));
  spdlog::info("runner {}: job {} succeeded", o.name, job.id);
  return true;
}

int run_jobs(const JobRunnerOptions& o) {
  RedisOptions ro;
  ro.reconnect_for = std::chrono::milliseconds(60000);
  auto redis = RedisClient::connect_waiting(o.redis, ro);
  if (!redis.ok()) {
    spdlog::error("runner {}: {}", o.name, std::string(redis.status().message()));
    return 1;
  }
  JobStore store(**redis, o.prefix);
  WorkerPool pool(**redis, o.prefix);
  const bool learner_role = o.role == RunnerRole::kLearner;
  const std::string role = learner_role ? "learner" : "runner";
  Presence heartbeat(o.redis, o.prefix, o.name, learner_role ? "learner" : "runner");
  metrics::Registry registry;
  metrics::register_build_info(registry, /*nccl=*/false);  // the runner's own process moves no weights
  metrics::Value& busy = registry.gauge("interlace_runner_busy", "1 while this runner runs a job");
  auto jobs_run = [&](const char* kind) -> metrics::Value& {
    return registry.counter("interlace_runner_jobs_total", "jobs this runner started (or resumed), by kind",
                            {{"kind", kind}});
  };
  jobs_run("train"), jobs_run("rollout");  // at 0 from the start
  std::unique_ptr<HealthEndpoint> endpoint;
  if (o.health_port > 0) {
    endpoint = std::make_unique<HealthEndpoint>(heartbeat, registry);
    if (absl::Status s = endpoint->start(role, o.health_host, o.health_port); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
  }
  auto run = [&](const JobRecord& job) {
    heartbeat.set_job(job.id);
    busy.set(1);
    jobs_run(job.kind == JobKind::kTrain ? "train" : "rollout").inc();
    const bool went_on = run_held_job(store, pool, job, o);
    busy.set(0);
    heartbeat.set_job("");
    return went_on;
  };
  // First what this runner held when it stopped or died.
  auto jobs = store.list(10000);
  if (jobs.ok())
    for (const JobRecord& j : *jobs)
      if (j.state == JobState::kRunning && j.owner == o.name)
        if (!run(j)) return 0;
  spdlog::info("{} {}: waiting for {} (Redis {})", role, o.name, learner_role ? "train jobs" : "train and rollout jobs",
               o.redis.to_string());
  auto last_orphan_check = Clock::time_point();
  while (!(o.stop && o.stop())) {
    // Jobs of runners that stopped heartbeating go back to the queue (any
    // idle runner does this; the script makes it happen once per job).
    if (Clock::now() - last_orphan_check > std::chrono::seconds(5)) {
      last_orphan_check = Clock::now();
      if (auto requeued = store.requeue_orphans(); requeued.ok())
        for (const std::string& id : *requeued) spdlog::warn("runner {}: job {} lost its runner; queued again", o.name, id);
    }
    // Train jobs first: they are the long ones a user waits on.
    auto job = store.claim(JobKind::kTrain, o.name);
    if (!learner_role && job.ok() && !job->has_value()) job = store.claim(JobKind::kRollout, o.name);
    if (!job.ok()) {
      spdlog::warn("runner {}: {}", o.name, std::string(job.status().message()));
    } else if (job->has_value()) {
      if (!run(**job)) return 0;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o.poll_seconds));
  }
  return 0;
}

}  // namespace interlace::control
