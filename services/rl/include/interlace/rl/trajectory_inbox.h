// The learner's trajectory inbox: what workers sent, made durable before it is
// acknowledged, held until a step trains it.
//
// A trajectory that passed the learner's content checks is offered: a key
// already spooled (or staged) is a duplicate (its ack was lost; acknowledge it
// again), a new group past the bound on unfinished groups is refused, anything
// else is appended to the spool and staged. sync() makes the staged ones
// durable (one fdatasync for many), and only then are they pending, counted as
// spooled (a resend is a duplicate) and acknowledged by the caller. If a write
// or the sync fails, the staged ones are dropped, none acknowledged, and their
// workers resend.
//
// On open the spool is read back: what the run log says was trained or dropped
// up to the checkpoint is not trained again; the rest is pending. No sockets,
// so it is tested alone.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/rl/rl_batch.h"
#include "interlace/rl/trajectory_check.h"
#include "interlace/transport/spool.h"
#include "interlace/transport/trajectory_codec.h"

namespace interlace::rl {

class TrajectoryInbox {
 public:
  struct Options {
    std::string spool_path;
    int64_t group_size = 1;
    // Unfinished groups held in memory at most (a peer sending one sample of
    // many groups once grew the learner by hundreds of MB).
    int64_t max_partial_groups = 1;
    int inject_write_failures = 0;  // tests of a full disk: every Nth spool write fails
  };
  // A spool record not trained on: it does not decode, or would break training
  // (spooled by an older learner that checked less).
  struct Quarantined {
    size_t record = 0;
    std::optional<SampleKey> key;
    std::string reason;
  };
  struct Replayed {
    int64_t records = 0;
    uint64_t damaged_bytes = 0, damaged_regions = 0;
    std::vector<Quarantined> quarantined;
    int64_t max_version = 0;  // newest weights version among the replayed trajectories
  };

  // Opens (or creates) the spool and reads it back. `consumed`: the keys the
  // run log says were trained or dropped; they are known (a resend is a
  // duplicate) and not pending. `limits` has max_version -1 (the learner
  // before a restart may have published past the checkpoint).
  static absl::StatusOr<TrajectoryInbox> open(const Options& options, const std::set<SampleKey>& consumed,
                                              const TrajectoryLimits& limits, Replayed* replayed);

  enum class Offered { kStaged, kDuplicate, kTooManyGroups, kSpoolFailed };
  // `frame` is `m` encoded. kTooManyGroups and kSpoolFailed set `*reason`;
  // kSpoolFailed also dropped every staged trajectory.
  Offered offer(transport::TrajectoryMessage m, std::string_view frame, std::string* reason);
  // Spooled or staged: a resend.
  bool known(const SampleKey& key) const { return spooled_.count(key) || staged_.count(key); }
  bool has_staged() const { return !staged_.empty(); }
  // fdatasync, then the staged trajectories are pending. Returns the groups
  // that became complete; on failure the staged ones are dropped.
  absl::StatusOr<std::vector<int64_t>> sync();

  bool group_complete(int64_t group) const;
  std::vector<int64_t> complete_groups() const;  // oldest (lowest id) first
  int64_t partial_groups() const;                 // pending or staged, not complete
  const Batch& pending() const { return pending_; }
  int64_t known_count() const { return static_cast<int64_t>(spooled_.size()); }
  // Moves the oldest `n` complete groups out (to be trained).
  Batch take(int64_t n);
  // Removes the complete groups whose lag behind `version` exceeds `eta`;
  // returns their keys.
  std::vector<SampleKey> drop_stale(int64_t version, int64_t eta);

  // Rewrites the spool with only the pending trajectories. Call right after a
  // checkpoint: everything trained or dropped before it is in the run log. On
  // failure the old spool is still whole and in use.
  absl::Status compact();
  uint64_t synced_bytes() const { return spool_->synced_bytes(); }
  const std::string& spool_path() const { return spool_->path(); }

 private:
  explicit TrajectoryInbox(const Options& o) : o_(o) {}
  Options o_;
  std::optional<transport::Spool> spool_;
  std::set<SampleKey> spooled_;  // every key ever accepted (and the run log's trained/dropped ones)
  std::map<SampleKey, transport::TrajectoryMessage> staged_;
  Batch pending_;
};

}  // namespace interlace::rl
