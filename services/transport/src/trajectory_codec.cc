#include "interlace/transport/trajectory_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

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

std::string encode_trajectory(const TrajectoryMessage& m) {
  const rollout::Trajectory& t = m.trajectory;
  capnp::MallocMessageBuilder builder;
  auto msg = builder.initRoot<proto::Trajectory>();
  set_trajectory_id(msg.initId(), m.job, t.group, t.sample, m.attempt);
  msg.setTaskSeed(t.task_seed);
  msg.setEnv(m.env);
  msg.setWorker(m.worker);
  // Each list at its own length: the receiver, not the sender, checks consistency.
  auto put = [](auto list, const auto& values) {
    for (unsigned i = 0; i < values.size(); ++i) list.set(i, values[i]);
  };
  put(msg.initTokens(static_cast<unsigned>(t.tokens.size())), t.tokens);
  put(msg.initLogprobs(static_cast<unsigned>(t.logprobs.size())), t.logprobs);
  put(msg.initSampledLogprobs(static_cast<unsigned>(t.sampled_logprobs.size())), t.sampled_logprobs);
  put(msg.initVersions(static_cast<unsigned>(t.versions.size())), t.versions);
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
    auto tokens = msg.getTokens();
    auto logprobs = msg.getLogprobs();
    auto sampled = msg.getSampledLogprobs();
    auto versions = msg.getVersions();
    t.tokens.reserve(tokens.size());
    t.logprobs.reserve(logprobs.size());
    t.sampled_logprobs.reserve(sampled.size());
    t.versions.reserve(versions.size());
    for (int32_t x : tokens) t.tokens.push_back(x);
    for (float x : logprobs) t.logprobs.push_back(x);
    for (float x : sampled) t.sampled_logprobs.push_back(x);
    for (int64_t x : versions) t.versions.push_back(x);
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
