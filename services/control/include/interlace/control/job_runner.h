// A job runner: the control plane's first way of running a submitted job. It
// claims queued jobs from the job store one at a time, train jobs first (the
// claim is atomic: two runners never take one job), and runs each whole on
// this machine in DIR/JOB_ID/: a train job as `interlace run` does (SFT
// warm-up, learner and workers as local processes, evaluation; its results
// are the final model as a tar), a rollout job as `interlace rollout` (its
// results are the trajectories). The job's event stream gets its progress
// and result, and its state becomes succeeded (with the results file) or
// failed. A job cancelled while it runs is stopped within a poll interval.
// Each runner heartbeats into the worker registry; the jobs of a runner whose
// heartbeat lapsed (killed, its machine gone) are queued again by an idle
// runner and resumed from their directory by whoever claims them (runners
// sharing one --dir: a train job resumes from its checkpoint). A restarted
// runner (same name) first resumes the jobs it still holds.
//
// The same loop is the pool learner (`interlace serve learner --redis`,
// role kLearner): it claims train jobs only and runs each with no rollout
// workers of its own; it asks the worker pool (worker_pool.h) for the job's
// `rollout.workers`, waits until the controller has assigned at least
// `rollout.min_workers`, starts the learner, and gives the workers back when
// the learner ends. Pool workers run on the job's directory, so learners and
// workers share --dir (one machine, or a shared volume).
#pragma once

#include <functional>
#include <string>

#include "interlace/control/job_store.h"
#include "interlace/control/redis_client.h"
#include "interlace/control/worker_pool.h"

namespace interlace::control {

enum class RunnerRole { kRunner, kLearner };

struct JobRunnerOptions {
  RunnerRole role = RunnerRole::kRunner;
  RedisAddress redis;
  std::string prefix = "interlace";
  std::string name;          // the owner name claims carry; the same after a restart
  std::string dir;           // where jobs run (DIR/JOB_ID/job.yaml, DIR/JOB_ID/run/)
  std::string interlace;     // the interlace executable (its services)
  double poll_seconds = 1.0;  // how often to look for work and for a cancel
  // When set, HOST and PORT of an HTTP endpoint for probes and Prometheus:
  // GET /healthz is 200 while the runner's last heartbeat into Redis is under
  // 10 s old (503 otherwise: Kubernetes restarts a runner cut off from
  // Redis), GET /metrics has interlace_runner_* and interlace_build_info.
  std::string health_host;
  int health_port = 0;
  std::string learner_host;  // kLearner: the address its learner binds and workers connect to ("": loopback)
  std::function<bool()> stop;  // polled; true ends the loop (a running job is interrupted, stays running, and is resumed next time)
};

// Runs until stop() says so: 0, or 1 when Redis could not be reached.
int run_jobs(const JobRunnerOptions& options);

// Runs one job this process holds (it claimed it, or the controller claimed
// it for it) in options.dir/JOB_ID/ to its end: its events, progress and
// final state; a cancel stops it within options.poll_seconds. False when
// options.stop() said stop (the job stays running under options.name).
bool run_held_job(JobStore& store, WorkerPool& pool, const JobRecord& job, const JobRunnerOptions& options);

}  // namespace interlace::control
