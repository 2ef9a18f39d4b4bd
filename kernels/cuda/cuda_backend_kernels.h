// The CUDA backend's kernel launches (cuda_backend_kernels.cu), called by
// its host side (cuda_backend.cc). Plain C++17 types only: nvcc compiles the
// kernels as C++17 (Debian 12's CMake knows no C++20 for nvcc), the host side
// is C++20 like the rest of the tree. Each launch is queued on `stream`; the
// caller checks cudaGetLastError. Never run on a GPU yet (cuda_backend.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace interlace::kernels::cuda::detail {

// Sequences per launch of the batched ops: their pointer tables travel as
// kernel parameters (no host-to-device copy; at most 40 bytes each, under the
// 4 KiB parameter limit), so a larger batch is split into launches of this many.
constexpr int kTableEntries = 96;
// The attention kernel keeps up to 4 output dimensions per thread of 128.
constexpr int64_t kMaxHeadDim = 512;
// moe_route keeps a token's expert probabilities in a thread's registers.
constexpr int64_t kMaxExperts = 256;
// The lightning kernels: one thread per state column, looping over the rest.
constexpr int64_t kMaxLightningHeadDim = 1024;

// A sequence's keys and values: contiguous rows (block_table null), or the
// paged layout (kernels/paged_kv.h): row p in block block_table[p / block_size]
// of the pools k and v.
struct KvEntry {
  const void* k;
  const void* v;
  int64_t length;
  const int32_t* block_table;
  int64_t block_size;
};
struct KvTable {
  KvEntry entry[kTableEntries];
};

struct StateEntry {
  float* base;
  float* delta;
  int64_t* steps;
};
struct StateTable {
  StateEntry entry[kTableEntries];
};
// Kernel parameters are limited to 4 KiB: a table plus the kernel's other
// arguments (under 128 bytes) must fit.
static_assert(sizeof(KvTable) + 128 <= 4096, "KvTable too large for kernel parameters");
static_assert(sizeof(StateTable) + 128 <= 4096, "StateTable too large for kernel parameters");

void rms_norm(cudaStream_t stream, const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps);
void rope(cudaStream_t stream, float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t rotary_dim, float theta);
void silu_mul(cudaStream_t stream, const float* gate, const float* up, float* out, int64_t n);
void silu_inplace(cudaStream_t stream, float* x, int64_t n);
void sigmoid_gate(cudaStream_t stream, const float* gate, float* x, int64_t n);
void log_softmax_gather(cudaStream_t stream, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                        float* out);
void moe_route(cudaStream_t stream, const float* logits, int64_t tokens, int64_t experts, int64_t top_k, int32_t* index,
               float* weight);
// Prefill (q_start >= 0): `queries` queries at q_start.. over table.entry[0].
// Decode (q_start < 0): query i is sequence i's last position over table.entry[i].
void attention(cudaStream_t stream, int64_t queries, int64_t q_heads, int64_t kv_heads, int64_t head_dim, float scale,
               int64_t window, bool bf16, const float* q, const KvTable& table, int64_t q_start, float* out);
// For each of the first `sequences` states: base <- r^steps base + delta,
// delta <- 0, steps <- 0. With `advance`, a step is counted first and the fold
// happens only once the count reaches block_size.
void lightning_fold(cudaStream_t stream, int64_t sequences, int64_t heads, int64_t head_dim, const float* slopes,
                    const StateTable& table, bool advance, int64_t block_size);
void lightning_decode(cudaStream_t stream, int64_t sequences, int64_t heads, int64_t head_dim, const float* slopes,
                      const float* q, const float* k, const float* v, const StateTable& table, float* out);
void lightning_prefill(cudaStream_t stream, int64_t heads, int64_t head_dim, const float* slopes, int64_t block_size,
                       const float* q, const float* k, const float* v, int64_t tokens, StateEntry state, float* out);

}  // namespace interlace::kernels::cuda::detail
