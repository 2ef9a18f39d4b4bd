#include "interlace/rl/trajectory_inbox.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"

namespace interlace::rl {

// The spool's records are encoded trajectories; the inbox reads them with the
// limit the learner's socket has.
constexpr transport::FrameLimits kRecordLimits{.max_bytes = size_t{16} << 20};

absl::StatusOr<TrajectoryInbox> TrajectoryInbox::open(const Options& options, const std::set<SampleKey>& consumed,
                                                      const TrajectoryLimits& limits, Replayed* replayed) {
  TrajectoryInbox inbox(options);
  transport::Spool::Recovered recovered;
  auto spool = transport::Spool::open(options.spool_path, &recovered);
  if (!spool.ok()) return spool.status();
  inbox.spool_.emplace(std::move(*spool));
  inbox.spool_->inject_write_failures(options.inject_write_failures);
  Replayed r;
  r.records = static_cast<int64_t>(recovered.records.size());
  r.damaged_bytes = recovered.damaged_bytes;
  r.damaged_regions = recovered.damaged_regions;
  for (size_t i = 0; i < recovered.records.size(); ++i) {
    auto m = transport::decode_trajectory(recovered.records[i], kRecordLimits);
    absl::Status valid = m.ok() ? check_trajectory(m->trajectory, limits) : m.status();
    if (!valid.ok()) {
      Quarantined q{.record = i, .key = std::nullopt, .reason = std::string(valid.message())};
      if (m.ok()) {
        q.key = SampleKey{m->trajectory.group, m->trajectory.sample};
        inbox.spooled_.insert(*q.key);  // a resend is a duplicate
      }
      r.quarantined.push_back(std::move(q));
      continue;
    }
    const SampleKey key{m->trajectory.group, m->trajectory.sample};
    inbox.spooled_.insert(key);
    for (int64_t v : m->trajectory.versions) r.max_version = std::max(r.max_version, v);
    if (!consumed.count(key)) inbox.pending_[key.first][key.second] = std::move(*m);
  }
  // A compacted spool no longer holds what was trained or dropped: the run
  // log says which ids those were, so their resends are still duplicates.
  inbox.spooled_.insert(consumed.begin(), consumed.end());
  if (replayed) *replayed = std::move(r);
  return inbox;
}

TrajectoryInbox::Offered TrajectoryInbox::offer(transport::TrajectoryMessage m, std::string_view frame,
                                                std::string* reason) {
  const SampleKey key{m.trajectory.group, m.trajectory.sample};
  if (known(key)) return Offered::kDuplicate;
  auto staged_from = staged_.lower_bound({key.first, INT64_MIN});
  const bool started =
      pending_.count(key.first) || (staged_from != staged_.end() && staged_from->first.first == key.first);
  if (!started && partial_groups() >= o_.max_partial_groups) {
    *reason = absl::StrCat("the learner holds ", partial_groups(), " unfinished groups, its limit; group ", key.first,
                           " is not started");
    return Offered::kTooManyGroups;
  }
  if (absl::Status s = spool_->append(frame); !s.ok()) {
    *reason = std::string(s.message());
    staged_.clear();  // this one and those appended since the last sync: none acknowledged, all resent
    return Offered::kSpoolFailed;
  }
  staged_.emplace(key, std::move(m));
  return Offered::kStaged;
}

absl::StatusOr<std::vector<int64_t>> TrajectoryInbox::sync() {
  if (absl::Status s = spool_->sync(); !s.ok()) {
    staged_.clear();
    return s;
  }
  std::vector<int64_t> completed;
  for (auto& [key, m] : staged_) {  // durable now
    spooled_.insert(key);
    pending_[key.first][key.second] = std::move(m);
    if (group_complete(key.first)) completed.push_back(key.first);
  }
  staged_.clear();
  return completed;
}

bool TrajectoryInbox::group_complete(int64_t group) const {
  auto it = pending_.find(group);
  return it != pending_.end() && static_cast<int64_t>(it->second.size()) == o_.group_size;
}

std::vector<int64_t> TrajectoryInbox::complete_groups() const {
  std::vector<int64_t> out;
  for (const auto& [group, samples] : pending_)
    if (static_cast<int64_t>(samples.size()) == o_.group_size) out.push_back(group);
  return out;
}

int64_t TrajectoryInbox::partial_groups() const {
  int64_t n = 0;
  for (const auto& [group, samples] : pending_) n += static_cast<int64_t>(samples.size()) < o_.group_size;
  // Staged samples of groups not pending yet start a group each (at most).
  std::set<int64_t> new_groups;
  for (const auto& [key, m] : staged_)
    if (!pending_.count(key.first)) new_groups.insert(key.first);
  return n + static_cast<int64_t>(new_groups.size());
}

Batch TrajectoryInbox::take(int64_t n) {
  Batch out;
  for (int64_t g : complete_groups()) {
    if (static_cast<int64_t>(out.size()) >= n) break;
    out[g] = std::move(pending_[g]);
    pending_.erase(g);
  }
  return out;
}

std::vector<SampleKey> TrajectoryInbox::drop_stale(int64_t version, int64_t eta) {
  std::vector<SampleKey> dropped;
  for (int64_t g : complete_groups()) {
    if (group_lag(pending_.at(g), version) <= eta) continue;
    for (const auto& [s, m] : pending_[g]) dropped.push_back({g, s});
    pending_.erase(g);
  }
  return dropped;
}

absl::Status TrajectoryInbox::compact() {
  std::vector<std::string> records;
  for (const auto& [group, samples] : pending_)
    for (const auto& [sample, m] : samples) records.push_back(transport::encode_trajectory(m));
  auto rewritten = transport::Spool::rewrite(spool_->path(), records);
  if (!rewritten.ok()) return rewritten.status();
  spool_.emplace(std::move(*rewritten));
  spool_->inject_write_failures(o_.inject_write_failures);
  return absl::OkStatus();
}

}  // namespace interlace::rl
