// Jobs in Redis: the control plane's state (issue 18). Every transition is one
// Lua script, so it is atomic: two learners never claim the same job, and a
// job cancelled while queued is never started. Timestamps come from the Redis
// server's clock (one clock for every controller). Each job has an event
// stream (state changes, log lines) that `interlace logs -f` follows.
//
// Keys, under a prefix (default "interlace"; tests use their own):
//   PREFIX:job_seq            the last job number
//   PREFIX:job:ID             hash: id kind name spec state owner reason
//                             created_ms started_ms finished_ms updated_ms
//                             results (a finished job's results file)
//                             step reward (a running job's progress)
//                             stat:NAME (more of its progress: set_progress)
//   PREFIX:jobs               sorted set of every job id, by number
//   PREFIX:queue:KIND         list: queued ids in submission order (FIFO)
//   PREFIX:running            set: ids of running jobs
//   PREFIX:events:ID          stream of the job's events, capped
//   PREFIX:submit:REQUEST     a submission's request id -> job id, for a day
//                             (a client resending after a lost reply gets the
//                             same job, not a second one)
// The scripts build key names from the prefix, so this works on one Redis
// server (or a primary with replicas), not on Redis Cluster.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/control/redis_client.h"

namespace interlace::control {

enum class JobKind { kTrain, kRollout };
enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

const char* job_kind_name(JobKind k);
const char* job_state_name(JobState s);
absl::StatusOr<JobKind> parse_job_kind(std::string_view s);
absl::StatusOr<JobState> parse_job_state(std::string_view s);
bool is_final(JobState s);

struct JobRecord {
  std::string id, name, spec, owner, reason;
  // A succeeded job's results: a file on the runners' disk (a rollout job's
  // trajectories, a train job's final model as a tar), "" if none.
  std::string results;
  // A running train job's progress, as its runner last reported it: the RL
  // step and that step's mean reward (NaN: none yet).
  int64_t step = 0;
  double reward = NAN;
  std::map<std::string, double> stats;  // set_progress's stats, as last reported
  // Pool workers (worker_pool.h): how many its learner wants, how many it has.
  int64_t workers_want = 0, workers = 0;
  JobKind kind = JobKind::kTrain;
  JobState state = JobState::kQueued;
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0, updated_ms = 0;  // 0: not yet
};

struct JobEvent {
  std::string id;  // the stream entry id ("1700000000000-0"), increasing
  std::string type, message;
};

struct Submission {
  JobKind kind = JobKind::kTrain;
  std::string name;
  std::string spec;        // the job spec (YAML text), stored as given
  std::string request_id;  // optional: resubmitting the same id returns the same job
};

// What a store accepts (a stranger's input reaches it through the controller).
inline constexpr size_t kMaxSpecBytes = 1 << 20;
inline constexpr size_t kMaxNameBytes = 128;
inline constexpr size_t kMaxEventBytes = 16 << 10;
inline constexpr int64_t kMaxEventsKept = 10000;  // per job; older ones are trimmed

class JobStore {
 public:
  explicit JobStore(RedisClient& redis, std::string prefix = "interlace") : redis_(redis), prefix_(std::move(prefix)) {}

  // Queues a job; returns its id. InvalidArgument (nothing stored) for an
  // empty or oversized spec, an oversized name or request id.
  absl::StatusOr<std::string> submit(const Submission& s);
  // Takes the oldest queued job of `kind` for `owner` (queued -> running), or
  // nullopt when none is queued.
  absl::StatusOr<std::optional<JobRecord>> claim(JobKind kind, const std::string& owner);
  // running -> succeeded | failed | cancelled, queued -> cancelled. With
  // `owner`, only while that owner holds the job (a learner that lost its job
  // cannot finish it). FailedPrecondition names the state the job is in;
  // NotFound for an unknown id. `results` is recorded with the new state.
  absl::StatusOr<JobRecord> transition(const std::string& id, JobState to, const std::string& reason,
                                       const std::string& owner = "", const std::string& results = "");
  // The owner's report of a running job's progress (FailedPrecondition when
  // the job is not running under `owner`).
  // `stats`: more of the step's figures (a train job's throughput, staleness,
  // cache hit rate, rollout/learner mismatch), kept as they come.
  absl::Status set_progress(const std::string& id, const std::string& owner, int64_t step, double reward,
                            const std::map<std::string, double>& stats = {});
  // Running jobs whose owner no longer heartbeats (its registry entry,
  // worker_registry.h, lapsed: a runner killed, its machine gone) go back to
  // the front of their queue, for any runner to take and resume; returns
  // their ids. Atomic per job: a runner that beats again in between keeps it.
  absl::StatusOr<std::vector<std::string>> requeue_orphans();
  // How many jobs are queued and running now (two reads, no scan).
  absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> counts();
  absl::StatusOr<JobRecord> get(const std::string& id);
  // Newest first, at most `limit`.
  absl::StatusOr<std::vector<JobRecord>> list(int64_t limit = 100);
  absl::Status append_event(const std::string& id, const std::string& type, const std::string& message);
  // Events after `after` ("" or "0": from the start), at most `count`.
  absl::StatusOr<std::vector<JobEvent>> events(const std::string& id, const std::string& after = "0", int64_t count = 100);
  // Queued jobs of `kind`, in the order they will be claimed.
  absl::StatusOr<std::vector<std::string>> queue(JobKind kind);

 private:
  std::string key(const std::string& what) const { return prefix_ + ":" + what; }
  RedisClient& redis_;
  std::string prefix_;
};

}  // namespace interlace::control
