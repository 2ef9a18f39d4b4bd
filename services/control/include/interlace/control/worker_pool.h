// Rollout workers given to training jobs: the controller's scheduling (issue
// 18). A pool learner (`interlace serve learner --redis`) that runs a train
// job says how many workers it wants and the fewest it can start with; the
// controller's scheduling pass gives idle pool workers (`interlace serve
// worker --redis`, registry kind "worker") to running jobs, oldest job
// first, up to what each wants, and takes them back when their job ends, is
// cancelled or queued again, wants fewer, or when a worker's heartbeat
// lapses (a killed worker is replaced by the next idle one). A job is given
// workers only if it can reach its minimum; until then the idle workers wait
// for a job that can. Idle workers left over take queued rollout jobs (one
// each, oldest first: the job is claimed for the worker, which runs its
// episodes itself; a lapsed worker's rollout job is queued again). Every
// pass is one Lua script, so two controllers
// running passes at once never give one worker to two jobs.
//
// Keys, under the job store's prefix:
//   PREFIX:job:ID           hash fields workers_want, workers_min (0: none)
//   PREFIX:job:ID:workers   set: the workers assigned to the job
//   PREFIX:assign:NAME      the job a worker is assigned to (absent: idle)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/control/redis_client.h"

namespace interlace::control {

struct Assignment {
  std::string worker, job;
  bool assigned = true;  // false: taken back
  std::string reason;    // why it was taken back
};

class WorkerPool {
 public:
  explicit WorkerPool(RedisClient& redis, std::string prefix = "interlace") : redis_(redis), prefix_(std::move(prefix)) {}

  // The owner of running job `id` wants `want` workers and can start with
  // `min` (want 0: it is done with workers; they are taken back by the next
  // pass). FailedPrecondition when the job does not run under `owner`.
  absl::Status want_workers(const std::string& id, const std::string& owner, int64_t want, int64_t min);
  // One scheduling pass; returns what it changed.
  absl::StatusOr<std::vector<Assignment>> schedule();
  // The job `worker` is assigned to ("" when none).
  absl::StatusOr<std::string> assignment(const std::string& worker);
  // The workers assigned to job `id`, by name.
  absl::StatusOr<std::vector<std::string>> assigned(const std::string& id);

 private:
  std::string key(const std::string& what) const { return prefix_ + ":" + what; }
  RedisClient& redis_;
  std::string prefix_;
};

}  // namespace interlace::control
