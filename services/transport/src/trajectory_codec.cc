#include "interlace/transport/trajectory_codec.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proto/trajectory.capnp.h"
#include "trajectory_id.h"

namespace interlace::transport {

std::string trajectory_key(const std::string& job, int64_t group, int64_t sample, uint32_t attempt) {
  return absl::StrCat(job, "/", group, "/", sample, "/", attempt);
}

std::string trajectory_key(const TrajectoryMessage& m) {
  return trajectory_key(m.job, m.trajectory.group, m.trajectory.sample, m.attempt);
}

namespace {

// Cap'n Proto lays out a list of primitives as the elements themselves,
// little-endian, so on a little-endian host a whole list is one memcpy. Setting
// and reading element by element was the codec's main cost (0.77x raw ZeroMQ).
static_assert(std::endian::native == std::endian::little, "bulk list copies assume a little-endian host");

template <typename T>
void fill_list(typename capnp::List<T>::Builder list, const std::vector<T>& values) {
  if (values.empty()) return;
  // The list's bytes live in the builder's own (mutable) segment; the raw view
  // is only offered through the reader.
  kj::ArrayPtr<const kj::byte> raw = capnp::AnyList::Reader(list.asReader()).getRawBytes();
  std::memcpy(const_cast<kj::byte*>(raw.begin()), values.data(), values.size() * sizeof(T));
}

// A list written by another encoder may legally use a wider element layout
// (Cap'n Proto's schema evolution); then the raw bytes are not T[], and the
// elements are read one by one.
template <typename T>
void read_list(typename capnp::List<T>::Reader list, std::vector<T>& out) {
  out.resize(list.size());
  if (list.size() == 0) return;
  kj::ArrayPtr<const kj::byte> raw = capnp::AnyList::Reader(list).getRawBytes();
  if (raw.size() == out.size() * sizeof(T)) {
    std::memcpy(out.data(), raw.begin(), raw.size());
  } else {
    for (unsigned i = 0; i < list.size(); ++i) out[i] = list[i];
  }
}

// Words the message needs, so the builder allocates one segment of the right
// size (a second segment and the copy to join them cost as much as the data).
unsigned trajectory_words(const TrajectoryMessage& m) {
  const rollout::Trajectory& t = m.trajectory;
  const size_t bytes = t.tokens.size() * 4 + t.logprobs.size() * 4 + t.sampled_logprobs.size() * 4 +
                       t.versions.size() * 8 + t.loss_mask.size() + t.turns.size() * 32 + m.job.size() +
                       m.env.size() + m.worker.size() + t.finish_reason.size();
  return static_cast<unsigned>(bytes / sizeof(capnp::word) + 64);
}

}  // namespace

std::string encode_trajectory(const TrajectoryMessage& m) {
  const rollout::Trajectory& t = m.trajectory;
  capnp::MallocMessageBuilder builder(trajectory_words(m));
  auto msg = builder.initRoot<proto::Trajectory>();
  set_trajectory_id(msg.initId(), m.job, t.group, t.sample, m.attempt);
  msg.setTaskSeed(t.task_seed);
  msg.setEnv(m.env);
  msg.setWorker(m.worker);
  // Each list at its own length: the receiver, not the sender, checks consistency.
  fill_list<int32_t>(msg.initTokens(static_cast<unsigned>(t.tokens.size())), t.tokens);
  fill_list<float>(msg.initLogprobs(static_cast<unsigned>(t.logprobs.size())), t.logprobs);
  fill_list<float>(msg.initSampledLogprobs(static_cast<unsigned>(t.sampled_logprobs.size())), t.sampled_logprobs);
  fill_list<int64_t>(msg.initVersions(static_cast<unsigned>(t.versions.size())), t.versions);
  msg.setLossMask(capnp::Data::Reader(t.loss_mask.data(), t.loss_mask.size()));
  auto turns = msg.initTurns(static_cast<unsigned>(t.turns.size()));
  for (unsigned i = 0; i < t.turns.size(); ++i) {
    turns[i].setRole(t.turns[i].role);
    turns[i].setStart(static_cast<uint32_t>(t.turns[i].start));
    turns[i].setEnd(static_cast<uint32_t>(t.turns[i].end));
  }
  msg.setReward(t.reward);
  msg.setFinishReason(t.finish_reason);
  msg.setCachedTokens(static_cast<uint64_t>(t.cached_tokens));
  return flat_frame(builder);
}

namespace {

absl::Status check_consistency(const rollout::Trajectory& t) {
  const size_t n = t.tokens.size();
  if (t.logprobs.size() != n || t.sampled_logprobs.size() != n || t.loss_mask.size() != n || t.versions.size() != n)
    return absl::InvalidArgumentError(absl::StrCat("per-token arrays differ in length: tokens ", n, ", logprobs ",
                                                   t.logprobs.size(), ", sampledLogprobs ", t.sampled_logprobs.size(),
                                                   ", lossMask ", t.loss_mask.size(), ", versions ",
                                                   t.versions.size()));
  for (size_t i = 0; i < n; ++i) {
    if (t.loss_mask[i] > 1) return absl::InvalidArgumentError(absl::StrCat("lossMask[", i, "] is not 0 or 1"));
    if (t.loss_mask[i] && (!std::isfinite(t.logprobs[i]) || t.versions[i] < 0))
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i, " is trained on but has no finite log-prob or no weights version"));
  }
  for (size_t i = 0; i < t.turns.size(); ++i)
    if (t.turns[i].start > t.turns[i].end || t.turns[i].end > static_cast<int64_t>(n))
      return absl::InvalidArgumentError(absl::StrCat("turn ", i, " [", t.turns[i].start, ", ", t.turns[i].end,
                                                     ") is outside the ", n, " tokens"));
  if (!std::isfinite(t.reward)) return absl::InvalidArgumentError("reward is not finite");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrajectoryMessage> decode_trajectory(std::string_view frame, const FrameLimits& limits) {
  TrajectoryMessage m;
  rollout::Trajectory& t = m.trajectory;
  absl::Status read = read_frame<proto::Trajectory>(frame, limits, "trajectory", [&](proto::Trajectory::Reader msg) {
    auto id = msg.getId();
    m.job = id.getJob();
    t.group = static_cast<int64_t>(id.getGroup());
    t.sample = id.getSample();
    m.attempt = id.getAttempt();
    t.task_seed = msg.getTaskSeed();
    m.env = msg.getEnv();
    m.worker = msg.getWorker();
    read_list<int32_t>(msg.getTokens(), t.tokens);
    read_list<float>(msg.getLogprobs(), t.logprobs);
    read_list<float>(msg.getSampledLogprobs(), t.sampled_logprobs);
    read_list<int64_t>(msg.getVersions(), t.versions);
    auto mask = msg.getLossMask();
    t.loss_mask.assign(mask.begin(), mask.end());
    for (auto turn : msg.getTurns()) t.turns.push_back({turn.getRole(), turn.getStart(), turn.getEnd()});
    t.reward = msg.getReward();
    t.finish_reason = msg.getFinishReason();
    t.cached_tokens = static_cast<int64_t>(msg.getCachedTokens());
  });
  if (!read.ok()) return read;
  if (absl::Status s = check_consistency(t); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("inconsistent trajectory ", trajectory_key(m), ": ", s.message()));
  return m;
}

}  // namespace interlace::transport
