// Weights by NCCL (library interlace::transport_nccl). Built from
// nccl_weights.cc when CMake finds CUDA and NCCL, otherwise from
// nccl_weights_stub.cc, whose every entry point fails saying the build has no
// NCCL: the services compile one way and fall back to ZeroMQ at run time. The learner and each worker form a
// two-rank NCCL group (learner rank 0, the root; worker rank 1) and the
// learner broadcasts a publication's safetensors bytes from a device buffer;
// the worker copies them to the host, where fetch_weights checks them against
// the CRC-32C announced over ZeroMQ before anything is swapped.
//
// ZeroMQ stays the control path and the fallback: a worker asks for weights on
// the weights port as always, saying it accepts NCCL and which group it holds;
// the learner answers with one WeightChunk whose `nccl` field names the group
// (a new ncclUniqueId, or the group the worker already holds) and broadcasts.
//
// Why a group per worker and not one group for all of them: workers start,
// restart (kill -9 is part of the tests) and fetch when they are ready; an
// NCCL group has a fixed membership and a collective waits for every rank,
// so one group would tie every update to the slowest worker and every restart
// would have to rebuild it for all. The cost: with N workers the learner's link
// carries the bytes N times instead of once over a broadcast tree.
//
// Every NCCL call has a deadline: the groups are nonblocking
// (ncclConfig_t.blocking = 0), polled, and aborted (ncclCommAbort) when a peer
// does not come or dies, so neither side hangs; the worker then fetches over
// ZeroMQ and the next request forms a new group. The learner serves one worker
// at a time: an offer still queued when the worker's own timeout has passed is
// not started, and a worker's new request replaces what is queued for it.
// Known cost: ncclGetUniqueId leaves a bootstrap thread and socket waiting for
// a group whose worker never joins; workers stop asking after a few failures
// in a row (worker_service.cc), which bounds it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "interlace/transport/messages.h"

namespace interlace::transport::nccl {

// False in a build without CUDA and NCCL (the stub).
bool built_with_nccl();

// The CUDA devices this process sees; an error says why there are none
// (no driver, no device, no NCCL in this build).
absl::StatusOr<int> device_count();

// One side of a two-rank group.
class NcclPair {
 public:
  // A fresh ncclUniqueId (its bytes): the group's rank 0 must create it.
  static absl::StatusOr<std::string> new_unique_id();
  // Joins the group as `rank` (0 or 1) on CUDA device `device`.
  static absl::StatusOr<std::unique_ptr<NcclPair>> join(std::string_view unique_id, int rank, int device,
                                                         std::chrono::milliseconds timeout);
  ~NcclPair();  // aborts the group (never waits on the peer)
  NcclPair(const NcclPair&) = delete;
  NcclPair& operator=(const NcclPair&) = delete;

  // Rank 0 sends the `n` bytes at device address `device_bytes`; rank 1
  // receives them there. A failure leaves the pair unusable (aborted).
  absl::Status broadcast(void* device_bytes, size_t n, std::chrono::milliseconds timeout);
  bool usable() const;

 private:
  struct State;
  explicit NcclPair(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// The learner's side: offers answer weight requests on the main thread; the
// joins and broadcasts run on a thread of their own, one at a time.
class WeightSender {
 public:
  struct Counts {
    uint64_t sent = 0, failed = 0, bytes = 0;
    double seconds = 0;
    std::string last_error;  // of the latest failure: which worker, which group, what
  };
  // Fails when CUDA or NCCL cannot be used on `device`.
  static absl::StatusOr<std::unique_ptr<WeightSender>> start(int device, std::chrono::milliseconds timeout);
  ~WeightSender();
  // The publication that offers from now on refer to.
  void publish(int64_t version, uint64_t weights_id, uint32_t total_crc32c, std::string payload);
  // The answer to `worker`'s request: one chunk message without data whose
  // nccl fields name the group (the worker's own if `worker_session` is still
  // live here, else a new one); the broadcast is queued.
  absl::StatusOr<WeightChunkMessage> offer(const std::string& worker, uint64_t worker_session);
  Counts counts() const;

 private:
  struct State;
  explicit WeightSender(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// The worker's side: holds its group with the learner between updates.
class WeightReceiver {
 public:
  WeightReceiver(int device, std::chrono::milliseconds timeout);
  ~WeightReceiver();
  uint64_t session() const;  // the group held (0: none)
  // Takes the bytes an offer announces (joining the group it names when it is
  // a new one); on failure the group is dropped, so the next request asks for
  // a new one.
  absl::StatusOr<std::string> receive(const WeightChunkFields& offer);
  // Forgets the group (the bytes it brought failed a check further on).
  void drop();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace interlace::transport::nccl
