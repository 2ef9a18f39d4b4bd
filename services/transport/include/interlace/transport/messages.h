// The small messages between services (proto/*.capnp) as plain structs, with
// encoders and checked decoders (see frame.h). Trajectories are in
// trajectory_codec.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/transport/frame.h"

namespace interlace::transport {

// proto::Ack: the learner's answer to one trajectory.
struct AckMessage {
  std::string job;
  int64_t group = 0, sample = 0;
  uint32_t attempt = 0;
  bool accepted = true;  // false: rejected for good (malformed content, stale); do not resend
  std::string reason;
};
std::string encode_ack(const AckMessage& m);
absl::StatusOr<AckMessage> decode_ack(std::string_view frame, const FrameLimits& limits = {});

// proto::Task with its proto::Sampling.
struct TaskMessage {
  std::string job, env;
  int64_t group = 0;
  uint64_t task_seed = 0;
  uint32_t group_size = 1, attempt = 0;
  int64_t weights_version = 0;  // run with at least this version
  float temperature = 1, top_p = 1;
  uint32_t top_k = 0, max_turns = 4, max_turn_tokens = 128, max_episode_tokens = 4096;
  uint64_t seed = 0;
};

// proto::TaskGrant.
struct TaskGrantMessage {
  std::vector<TaskMessage> tasks;
  int64_t weights_version = 0;
  uint64_t weights_id = 0;
  bool job_done = false;
};
std::string encode_task_grant(const TaskGrantMessage& m);
absl::StatusOr<TaskGrantMessage> decode_task_grant(std::string_view frame, const FrameLimits& limits = {});

// proto::Heartbeat: a worker's load and cache state, and its request for work.
struct HeartbeatMessage {
  std::string service;
  int64_t unix_millis = 0, weights_version = 0;
  uint32_t running = 0, waiting = 0, want_tasks = 0, unacked = 0;
  uint64_t cache_hit_tokens = 0, cache_query_tokens = 0, cache_bytes = 0, incarnation = 0, weights_id = 0;
};
std::string encode_heartbeat(const HeartbeatMessage& m);
absl::StatusOr<HeartbeatMessage> decode_heartbeat(std::string_view frame, const FrameLimits& limits = {});

// proto::WeightRequest.
struct WeightRequestMessage {
  std::string worker;
  uint64_t have_weights_id = 0;
  bool accepts_nccl = false;
  uint64_t nccl_session = 0;
  bool only_if_newer = false;  // polling: "up to date" (a count-0 chunk) instead of the same bytes again
};
std::string encode_weight_request(const WeightRequestMessage& m);
absl::StatusOr<WeightRequestMessage> decode_weight_request(std::string_view frame, const FrameLimits& limits = {});

// proto::WeightChunk: its fields other than the bytes, and a whole message.
struct WeightChunkFields {
  int64_t version = 0;
  uint64_t weights_id = 0;
  uint32_t index = 0, count = 0;
  uint64_t total_bytes = 0, offset = 0;
  uint32_t chunk_crc32c = 0, total_crc32c = 0;
  // proto::NcclTransfer, when the bytes come by NCCL (nccl_session != 0).
  uint64_t nccl_session = 0;
  std::string nccl_unique_id;
  bool by_nccl() const { return nccl_session != 0; }
};
struct WeightChunkMessage : WeightChunkFields {
  std::string data;
};
std::string encode_weight_chunk(const WeightChunkMessage& m);
// Reads a chunk without copying its bytes: `on_chunk(fields, data)` runs with
// `data` viewing the frame (valid only during the call); its status is returned.
absl::Status read_weight_chunk(std::string_view frame, const FrameLimits& limits,
                               const std::function<absl::Status(const WeightChunkFields&, std::string_view)>& on_chunk);

}  // namespace interlace::transport
