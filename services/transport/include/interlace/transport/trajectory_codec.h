// Trajectories on the wire: rollout::Trajectory <-> Cap'n Proto frames
// (proto/trajectory.capnp). Decoding never throws and never trusts the frame:
// size, alignment, Cap'n Proto traversal and nesting limits, and the
// trajectory's own consistency (per-token arrays of one length, a 0/1 mask,
// turns inside the sequence) are all checked; a bad frame is an error that
// says what was wrong.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "interlace/rollout/agent.h"
#include "interlace/transport/frame.h"

namespace interlace::transport {

struct TrajectoryMessage {
  std::string job, env, worker;
  uint32_t attempt = 0;
  rollout::Trajectory trajectory;  // group and sample are the id's
};

std::string encode_trajectory(const TrajectoryMessage& message);
absl::StatusOr<TrajectoryMessage> decode_trajectory(std::string_view frame, const FrameLimits& limits = {});

// "job/group/sample/attempt": the key duplicates are dropped by.
std::string trajectory_key(const TrajectoryMessage& m);
std::string trajectory_key(const std::string& job, int64_t group, int64_t sample, uint32_t attempt);

}  // namespace interlace::transport
