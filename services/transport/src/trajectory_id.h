// The trajectory id (job, group, sample, attempt) as trajectories and acks carry it.
#pragma once

#include <cstdint>
#include <string>

#include "proto/trajectory.capnp.h"

namespace interlace::transport {

inline void set_trajectory_id(proto::TrajectoryId::Builder id, const std::string& job, int64_t group, int64_t sample,
                              uint32_t attempt) {
  id.setJob(job);
  id.setGroup(static_cast<uint64_t>(group));
  id.setSample(static_cast<uint32_t>(sample));
  id.setAttempt(attempt);
}

}  // namespace interlace::transport
