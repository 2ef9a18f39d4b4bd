// Weights over ZeroMQ: the learner cuts a publication (a safetensors file's
// bytes) into CRC-32C-checked chunks; a worker asks for it on the learner's
// weights port and assembles the chunks. A chunk whose checksum, place or
// publication is wrong fails the whole fetch, and so does a payload whose
// total checksum is wrong: the worker keeps its old weights and asks again.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "interlace/transport/messages.h"

namespace interlace::transport {

std::vector<WeightChunkMessage> chunk_weights(const std::string& payload, int64_t version, uint64_t weights_id,
                                              size_t chunk_bytes = size_t{1} << 20);

class WeightAssembler {
 public:
  // Assembles into `buffer`'s memory (a previous payload handed back): a worker
  // that reuses it avoids faulting in fresh pages for every update.
  explicit WeightAssembler(std::string buffer = {}) : payload_(std::move(buffer)) {}
  // Checks a chunk (its checksum, that it belongs to this publication, its
  // place) and copies its bytes into the payload.
  absl::Status add(const WeightChunkFields& chunk, std::string_view data);
  absl::Status add(const WeightChunkMessage& chunk) { return add(chunk, chunk.data); }
  // Decodes a chunk frame and adds it, copying its bytes once (frame -> payload).
  absl::Status add_frame(std::string_view frame, const FrameLimits& limits = {});
  bool complete() const { return count_ > 0 && received_ == count_; }
  int64_t version() const { return version_; }
  uint64_t weights_id() const { return weights_id_; }
  // The payload, once complete, its chunks tile it exactly and the total
  // checksum (combined from the verified chunks' checksums) matches.
  absl::StatusOr<std::string> finish();

 private:
  int64_t version_ = 0;
  uint64_t weights_id_ = 0;
  uint32_t count_ = 0, received_ = 0, total_crc_ = 0;
  std::string payload_;
  struct Placed {
    bool received = false;
    uint64_t offset = 0, size = 0;
    uint32_t crc = 0;
  };
  std::vector<Placed> placed_;  // by chunk index
};

struct WeightsPayload {
  int64_t version = 0;
  uint64_t weights_id = 0;
  std::string bytes;
  bool by_nccl = false;  // the bytes came by NCCL (and passed the checksum)
  bool up_to_date = false;  // request.only_if_newer and the requester has the learner's publication: no bytes
};

// Receives the bytes of a publication the learner offers by NCCL (`offer`
// names the group and the size); fetch_weights checks them against the
// offer's checksum, so a receiver only moves bytes.
using NcclReceive = std::function<absl::StatusOr<std::string>(const WeightChunkFields& offer)>;

// Sends `request` on a DEALER connected to a weights port and assembles the
// answer. Anything already queued on the socket (a previous fetch's tail) is
// drained first. `rejected_chunks` (optional) counts chunks that failed a check.
// `reuse` (optional): a previous payload's bytes, whose memory is assembled into.
// `nccl`: how to take an NCCL offer (needed when request.accepts_nccl); an
// offer the request did not accept, or bytes that fail the check, fail the fetch.
absl::StatusOr<WeightsPayload> fetch_weights(zmq::socket_t& dealer, const WeightRequestMessage& request,
                                             std::chrono::milliseconds timeout, uint64_t* rejected_chunks = nullptr,
                                             std::string* reuse = nullptr, const NcclReceive& nccl = {});

}  // namespace interlace::transport
