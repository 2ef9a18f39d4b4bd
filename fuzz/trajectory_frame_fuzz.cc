// Trajectory frames as the learner's trajectories port receives them: any
// bytes decode to a trajectory or an error, never a crash; what decodes
// encodes and decodes again to the same thing.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "interlace/transport/trajectory_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace interlace::transport;
  const FrameLimits limits{.max_bytes = size_t{16} << 20};
  auto m = decode_trajectory(std::string_view(reinterpret_cast<const char*>(data), size), limits);
  if (!m.ok()) return 0;
  auto again = decode_trajectory(encode_trajectory(*m), limits);
  if (!again.ok() || again->trajectory.tokens != m->trajectory.tokens || again->job != m->job) std::abort();
  return 0;
}
