#include <cuda_runtime.h>

#include <cmath>

#include "interlace/kernels/cuda/cuda_kernels.h"

namespace interlace::kernels::cuda {
namespace {

std::string last_error(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return {};
  return std::string(what) + ": " + cudaGetErrorString(e);
}

__device__ float block_sum(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? partial[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

__device__ float block_max(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? partial[threadIdx.x] : -INFINITY;
  if (warp == 0)
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t dim, float eps) {
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (xr[i] * inv) * w[i];
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* o, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// One block per (sequence, head); thread d owns column d of the state.
__global__ void lightning_decode_kernel(int64_t heads, int64_t D, const float* slopes,
                                        const float* q, const float* k, const float* v,
                                        float* states, float* out) {
  const int64_t bh = blockIdx.x, h = bh % heads;
  const double r = exp(-double(slopes[h]));
  const float r_hi = float(r), r_lo = float(r - double(r_hi));
  const float* qb = q + bh * D;
  const float* kb = k + bh * D;
  const float* vb = v + bh * D;
  float* S = states + bh * D * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const float vd = vb[d];
    float o = 0;
    for (int64_t i = 0; i < D; ++i) {
      const float s = S[i * D + d];
      const float val = fmaf(s, r_hi, fmaf(s, r_lo, kb[i] * vd));
      S[i * D + d] = val;
      o += qb[i] * val;
    }
    out[bh * D + d] = o;
  }
}

__global__ void log_softmax_gather_kernel(const float* logits, const int32_t* targets,
                                          int64_t vocab, float* out) {
  const float* l = logits + blockIdx.x * vocab;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, l[i]);
  mx = block_max(mx);
  float sum = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(l[i] - mx);
  sum = block_sum(sum);
  if (threadIdx.x == 0) out[blockIdx.x] = l[targets[blockIdx.x]] - mx - logf(sum);
}

}  // namespace

bool device_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::string rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim,
                     float eps) {
  rms_norm_kernel<<<rows, 256>>>(x, weight, y, dim, eps);
  return last_error("rms_norm");
}

std::string silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  silu_mul_kernel<<<(n + 255) / 256, 256>>>(gate, up, out, n);
  return last_error("silu_mul");
}

std::string lightning_decode(int64_t batch, int64_t heads, int64_t head_dim, const float* slopes,
                             const float* q, const float* k, const float* v, float* states,
                             float* out) {
  lightning_decode_kernel<<<batch * heads, 128>>>(heads, head_dim, slopes, q, k, v, states, out);
  return last_error("lightning_decode");
}

std::string log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows,
                               int64_t vocab, float* out) {
  log_softmax_gather_kernel<<<rows, 256>>>(logits, targets, vocab, out);
  return last_error("log_softmax_gather");
}

}  // namespace interlace::kernels::cuda
