// `interlace run`'s orchestration: the whole RL job on this machine. It
// prepares the starting model (initialised, then SFT warm-up on the
// environment's demonstrations if the spec asks), evaluates it on held-out
// tasks, makes the run's CURVE keys, starts the learner and the rollout
// workers as child processes (`interlace serve ...`, restarted when they die),
// and when the learner is done evaluates the final model and writes
// summary.json and report.html. The parts that run as children are the
// interlace executable's own subcommands.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/rl/job_spec.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct LocalRunOptions {
  std::string job;        // the job spec (YAML)
  std::string run_dir;    // empty: runs/<job name>
  std::string interlace;  // the interlace executable
  bool resume = false, quiet = false;
  // Stop after preparing the starting model (SFT warm-up) and evaluating it:
  // no services, no RL; the summary holds the evaluation before RL only.
  bool warmup_only = false;
  int max_restarts = 10;                 // per service
  int metrics_port = 0;                  // > 0: the learner's /metrics port, workers' the next ones
  std::function<bool()> interrupted;     // polled; true stops the services (exit 130)
  // The rollout workers come from elsewhere (the control plane's pool, which
  // runs `interlace serve worker --run-dir RUN --name N` on a shared RUN):
  // none is started here. `before_services` runs once the learner's ports
  // and keys are in RUN (it may wait for workers; false means interrupted:
  // exit 130), `after_services` when the learner has ended.
  bool external_workers = false;
  // The address the learner binds and workers connect to ("": 127.0.0.1, or
  // what a resumed run's endpoints.json says). A pool learner in a pod gives
  // its pod IP, so that workers in other pods reach it.
  std::string host;
  std::function<bool(const JobSpec&)> before_services;
  std::function<void()> after_services;
};

struct LocalRunResult {
  int exit_code = 0;          // the supervisor's (non-zero: the services did not finish the job)
  nlohmann::json summary;     // summary.json, when exit_code is 0
};

// Errors: a bad spec, a run directory already in use without resume, a failed
// model preparation or key/endpoint write.
absl::StatusOr<LocalRunResult> run_local_job(const LocalRunOptions& options);

// The run's CURVE keys (RUN/keys/, see transport/curve.h): the learner's pair
// and one pair per local worker. Workers started elsewhere (rollout.workers: 0)
// make their own pair on a shared run directory, or have their .pub copied in.
absl::Status make_run_keys(const std::string& run_dir, int64_t workers);

}  // namespace interlace::rl
