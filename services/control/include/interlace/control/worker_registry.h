// Who is there to run jobs (and serve): each runner, learner, worker and serving worker registers itself in Redis and
// renews the entry with a heartbeat; an entry not renewed within its TTL
// disappears (a killed runner drops out of `interlace workers` within
// seconds, with nobody having to clean up after it).
//
// Keys, under the job store's prefix:
//   PREFIX:worker:NAME   JSON of the entry, with a TTL (SET ... PX)
//   PREFIX:workers       set of names ever heard of; a name whose entry
//                        expired is removed when the list is read
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/control/redis_client.h"

namespace interlace::control {

struct WorkerEntry {
  std::string name, kind = "runner", host;  // kind: runner | learner | worker | serving
  int64_t pid = 0;
  std::string state = "idle";  // idle | busy
  std::string job;             // the job it runs ("" when idle)
  int64_t started_ms = 0;      // when the process started (its clock)
  int64_t seen_ms = 0;         // when this entry was written (its clock)
  // A worker's load while it runs a job (-1: not known): requests running
  // and waiting in its engine, the share of its prefix/state cache in use.
  int64_t running = -1, waiting = -1;
  double cache_usage = -1;
  std::string endpoint;  // a serving worker's: where gateways send requests (ZeroMQ)
};

// This machine's host name (what an entry's `host` says).
std::string this_host();

class WorkerRegistry {
 public:
  explicit WorkerRegistry(RedisClient& redis, std::string prefix = "interlace")
      : redis_(redis), prefix_(std::move(prefix)) {}
  // Writes (or renews) the entry; it lapses after `ttl_ms` without a renewal.
  absl::Status heartbeat(const WorkerEntry& entry, int64_t ttl_ms);
  // Removes it at once (a runner stopping cleanly).
  absl::Status leave(const std::string& name);
  // The live entries, by name.
  absl::StatusOr<std::vector<WorkerEntry>> list();

 private:
  std::string key(const std::string& what) const { return prefix_ + ":" + what; }
  RedisClient& redis_;
  std::string prefix_;
};

}  // namespace interlace::control
