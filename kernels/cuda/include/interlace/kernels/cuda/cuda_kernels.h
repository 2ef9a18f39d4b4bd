// CUDA kernels on device pointers, with the same semantics as the Backend ops
// of the same name. Each returns an error string (empty on success) rather
// than throwing, so callers outside CUDA code need no CUDA headers.
//
// What they are for, until the GPU issue (a CUDA kernels::Backend for the
// rollout engine and the learner) lands: nothing in the engine, the learner
// or the services calls them yet; only tests/kernels' gpu-labelled tests do,
// checking each against the CPU reference on a device. They are the first
// pieces of that backend, kept compiling (nvcc, in the normal build when
// CUDA is found) so it starts from working parts. The gpu tests skip on a
// machine without a device, so CI does not run them.
#pragma once

#include <cstdint>
#include <string>

namespace interlace::kernels::cuda {

bool device_available();

std::string rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim,
                     float eps);
std::string silu_mul(const float* gate, const float* up, float* out, int64_t n);
// One lightning recurrence step for `batch` sequences whose states are
// contiguous: states[batch, heads, head_dim, head_dim]; slopes on the device.
std::string lightning_decode(int64_t batch, int64_t heads, int64_t head_dim, const float* slopes,
                             const float* q, const float* k, const float* v, float* states,
                             float* out);
std::string log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows,
                               int64_t vocab, float* out);

}  // namespace interlace::kernels::cuda
