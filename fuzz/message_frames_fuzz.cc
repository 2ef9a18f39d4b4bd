// The small frames (acks, heartbeats, task grants, weight requests and
// chunks): the first byte picks the decoder, the rest is the frame.
#include <cstdint>
#include <string_view>

#include "interlace/transport/messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace interlace::transport;
  if (size < 1) return 0;
  const std::string_view frame(reinterpret_cast<const char*>(data) + 1, size - 1);
  const FrameLimits limits{.max_bytes = size_t{64} << 10};
  switch (data[0] % 5) {
    case 0: (void)decode_ack(frame, limits); break;
    case 1: (void)decode_heartbeat(frame, limits); break;
    case 2: (void)decode_task_grant(frame, limits); break;
    case 3: (void)decode_weight_request(frame, limits); break;
    default:
      (void)read_weight_chunk(frame, limits, [](const WeightChunkFields&, std::string_view) { return absl::OkStatus(); });
  }
  return 0;
}
