// The NCCL weight transport in a build without CUDA and NCCL: the same
// interface, every entry point saying why it cannot work, so the services are
// compiled one way and choose at run time (they fall back to ZeroMQ chunks).
#include "interlace/transport/nccl_weights.h"

namespace interlace::transport::nccl {
namespace {

absl::Status not_built() {
  return absl::FailedPreconditionError(
      "this build has no NCCL (CMake found no nvcc, or no nccl.h and libnccl, when it was configured)");
}

}  // namespace

bool built_with_nccl() { return false; }

absl::StatusOr<int> device_count() { return not_built(); }

struct NcclPair::State {};
NcclPair::NcclPair(std::unique_ptr<State> state) : s_(std::move(state)) {}
NcclPair::~NcclPair() = default;
absl::StatusOr<std::string> NcclPair::new_unique_id() { return not_built(); }
absl::StatusOr<std::unique_ptr<NcclPair>> NcclPair::join(std::string_view, int, int, std::chrono::milliseconds) {
  return not_built();
}
absl::Status NcclPair::broadcast(void*, size_t, std::chrono::milliseconds) { return not_built(); }
bool NcclPair::usable() const { return false; }

struct WeightSender::State {};
WeightSender::WeightSender(std::unique_ptr<State> state) : s_(std::move(state)) {}
WeightSender::~WeightSender() = default;
absl::StatusOr<std::unique_ptr<WeightSender>> WeightSender::start(int, std::chrono::milliseconds) {
  return not_built();
}
void WeightSender::publish(int64_t, uint64_t, uint32_t, std::string) {}
absl::StatusOr<WeightChunkMessage> WeightSender::offer(const std::string&, uint64_t) { return not_built(); }
WeightSender::Counts WeightSender::counts() const { return {}; }

struct WeightReceiver::State {};
WeightReceiver::WeightReceiver(int, std::chrono::milliseconds) : s_(std::make_unique<State>()) {}
WeightReceiver::~WeightReceiver() = default;
uint64_t WeightReceiver::session() const { return 0; }
absl::StatusOr<std::string> WeightReceiver::receive(const WeightChunkFields&) { return not_built(); }
void WeightReceiver::drop() {}

}  // namespace interlace::transport::nccl
