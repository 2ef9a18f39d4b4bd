// A pool worker (`interlace serve worker --redis`): a long-lived rollout
// worker of the control plane. It registers in the worker registry (kind
// "worker", with its load: requests running and waiting, cache usage) and
// waits for the controller to assign it a running train job
// (worker_pool.h). Then it runs the job's rollout worker on the job's
// directory, `interlace serve worker --run-dir DIR/JOB/run --name NAME`, as
// a child process, which connects to the job's learner (CURVE: it makes its
// key pair in the run's keys/clients/, which the learner admits). When the
// assignment is taken back (the job ended, was cancelled or queued again,
// or wants fewer workers) it stops the child and is idle again; a child that
// ends with the learner's "done" waits for that; one that fails is started
// again after a back-off. A rollout job the controller claimed for it, it
// runs itself (`interlace rollout` in DIR/JOB_ID/, as a runner does; its
// trajectories are the job's results). Learners and workers share DIR (one
// machine, or a shared volume).
#pragma once

#include <functional>
#include <string>

#include "interlace/control/redis_client.h"

namespace interlace::control {

struct PoolWorkerOptions {
  RedisAddress redis;
  std::string prefix = "interlace";
  std::string name;       // its registry name, the same after a restart
  std::string dir;        // the jobs' directories (DIR/JOB_ID/run), shared with the learners
  std::string interlace;  // the interlace executable
  double poll_seconds = 0.5;
  std::string health_host;  // as JobRunnerOptions: /healthz and /metrics
  int health_port = 0;
  std::function<bool()> stop;
};

// Runs until stop() says so: 0, or 1 when Redis could not be reached.
int run_pool_worker(const PoolWorkerOptions& options);

// A name as a file name (the run's key file): [A-Za-z0-9._-] kept, anything
// else becomes '_'.
std::string file_safe_name(const std::string& name);

}  // namespace interlace::control
