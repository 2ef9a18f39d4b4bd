// The CUDA backend's kernels (see cuda_backend.h: never run on a device yet).
// Each mirrors the CPU backend's arithmetic where the CPU tests depend on it
// (the lightning state's base/delta split, the decay multiply split into a
// high and a low part), and the reference backend's definitions elsewhere.
#include <cmath>

#include "cuda_backend_kernels.h"

namespace interlace::kernels::cuda::detail {
namespace {

constexpr int kThreads = 128;
// The largest head_dim the attention kernel handles: each thread keeps
// kMaxDimsPerThread output dimensions in registers.
constexpr int kMaxDimsPerThread = 4;
static_assert(kMaxHeadDim <= int64_t{kThreads} * kMaxDimsPerThread);

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

// ---- elementwise and row ops ----

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t dim, float eps) {
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / float(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (xr[i] * inv) * w[i];
}

// One thread per (token, head, i < rotary_dim / 2); angles in double, as the
// reference computes them (positions times inverse frequencies reach 1e4+).
__global__ void rope_kernel(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
                            int64_t rotary_dim, float theta) {
  const int64_t half = rotary_dim / 2;
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= tokens * heads * half) return;
  const int64_t i = idx % half, th = idx / half, t = th / heads;
  float* p = x + th * head_dim;
  const double inv_freq = pow(double(theta), -2.0 * double(i) / double(rotary_dim));
  const double angle = double(positions[t]) * inv_freq;
  const double c = cos(angle), s = sin(angle);
  const double a = p[i], b = p[i + half];
  p[i] = float(a * c - b * s);
  p[i + half] = float(b * c + a * s);
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* o, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void silu_inplace_kernel(float* x, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = x[i] / (1.0f + expf(-x[i]));
}

__global__ void sigmoid_gate_kernel(const float* gate, float* x, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = x[i] / (1.0f + expf(-gate[i]));
}

__global__ void log_softmax_gather_kernel(const float* logits, const int32_t* targets, int64_t vocab, float* out) {
  const float* l = logits + blockIdx.x * vocab;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, l[i]);
  mx = block_max(mx);
  float sum = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(l[i] - mx);
  sum = block_sum(sum);
  if (threadIdx.x == 0) out[blockIdx.x] = l[targets[blockIdx.x]] - mx - logf(sum);
}

// Mixtral routing, one thread per token: softmax in double, then top-k by
// repeated selection (highest first, ties to the lower expert, as the
// reference's stable sort), weights renormalised over the chosen.
__global__ void moe_route_kernel(const float* logits, int64_t tokens, int64_t experts, int64_t top_k, int32_t* index,
                                 float* weight) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * experts;
  double p[kMaxExperts];
  bool taken[kMaxExperts];
  double mx = -INFINITY, sum = 0;
  for (int64_t e = 0; e < experts; ++e) mx = fmax(mx, double(l[e]));
  for (int64_t e = 0; e < experts; ++e) {
    p[e] = exp(double(l[e]) - mx);
    sum += p[e];
    taken[e] = false;
  }
  double top_sum = 0;
  for (int64_t i = 0; i < top_k; ++i) {
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e)
      if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
    taken[best] = true;
    index[t * top_k + i] = int32_t(best);
    top_sum += p[best] / sum;
  }
  for (int64_t i = 0; i < top_k; ++i) weight[t * top_k + i] = float(p[index[t * top_k + i]] / sum / top_sum);
}

// ---- softmax attention ----

__device__ inline float kv_at(const void* base, bool bf16, int64_t index) {
  if (bf16) return __uint_as_float(uint32_t(static_cast<const uint16_t*>(base)[index]) << 16);
  return static_cast<const float*>(base)[index];
}

// One block per (query, head): keys in tiles of kThreads, one key per thread
// for the scores, an online softmax across tiles, and each thread owning up to
// kMaxDimsPerThread output dimensions. Prefill (q_start >= 0): query
// blockIdx.x sits at position q_start + blockIdx.x over table.entry[0].
// Decode (q_start < 0): query blockIdx.x is sequence blockIdx.x's last
// position over table.entry[blockIdx.x]. Rows contiguous or paged (KvEntry).
__global__ void attention_kernel(int64_t q_heads, int64_t kv_heads, int64_t D, float scale, int64_t window, bool bf16,
                                 const float* q, KvTable table, int64_t q_start, float* out) {
  extern __shared__ float shared[];
  float* qs = shared;           // [D]
  float* ps = shared + D;       // [kThreads]
  const int64_t qi = blockIdx.x, h = blockIdx.y, kvh = h / (q_heads / kv_heads);
  const KvEntry kv = table.entry[q_start >= 0 ? 0 : qi];
  const int64_t pos = q_start >= 0 ? q_start + qi : kv.length - 1;
  const int64_t first = window > 0 ? max(int64_t{0}, pos - window + 1) : 0;
  const int64_t row = kv_heads * D;
  // Where position j's row starts, contiguous or through the block table.
  auto row_at = [&](int64_t j) {
    return kv.block_table ? (int64_t(kv.block_table[j / kv.block_size]) * kv.block_size + j % kv.block_size) * row
                          : j * row;
  };
  const float* qh = q + (qi * q_heads + h) * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qh[d];
  __syncthreads();
  float o[kMaxDimsPerThread] = {0, 0, 0, 0};
  float m = -INFINITY, l = 0;
  for (int64_t t0 = first; t0 <= pos; t0 += blockDim.x) {
    const int64_t j = t0 + threadIdx.x;
    float s = -INFINITY;
    if (j <= pos) {
      float dot = 0;
      const int64_t at = row_at(j) + kvh * D;
      for (int64_t d = 0; d < D; ++d) dot = fmaf(qs[d], kv_at(kv.k, bf16, at + d), dot);
      s = dot * scale;
    }
    const float m_new = fmaxf(m, block_max(s));
    const float alpha = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float p = j <= pos ? expf(s - m_new) : 0.0f;
    ps[threadIdx.x] = p;
    l = l * alpha + block_sum(p);  // block_sum synchronises: ps is complete after it
    const int64_t count = min(int64_t(blockDim.x), pos + 1 - t0);
    for (int c = 0; c < kMaxDimsPerThread; ++c) {
      const int64_t d = threadIdx.x + int64_t(c) * blockDim.x;
      if (d >= D) break;
      float acc = o[c] * alpha;
      for (int64_t jj = 0; jj < count; ++jj) acc = fmaf(ps[jj], kv_at(kv.v, bf16, row_at(t0 + jj) + kvh * D + d), acc);
      o[c] = acc;
    }
    m = m_new;
    __syncthreads();  // ps is rewritten by the next tile
  }
  float* oh = out + (qi * q_heads + h) * D;
  for (int c = 0; c < kMaxDimsPerThread; ++c) {
    const int64_t d = threadIdx.x + int64_t(c) * blockDim.x;
    if (d < D) oh[d] = l > 0 ? o[c] / l : 0.0f;  // no keys (an empty sequence): zeros, as the reference
  }
}

// ---- lightning attention ----

// The decay of `steps` steps in double, split so that x * r_hi + x * r_lo
// rounds once (the CPU backend's fma(x, r_hi, fma(x, r_lo, y))).
__device__ inline void split_decay(float slope, double steps, float* hi, float* lo) {
  const double r = exp(-double(slope) * steps);
  *hi = float(r);
  *lo = float(r - double(*hi));
}

// Sequence blockIdx.x, every head: base <- exp(-s * steps) base + delta,
// delta <- 0, steps <- 0 (when steps is 0 only delta is cleared). With
// `advance`, one step is counted first and the fold happens only when the count
// reaches block_size (decode's schedule); without, it always folds (before a prefill).
__global__ void fold_kernel(int64_t heads, int64_t D, const float* slopes, StateTable table, bool advance,
                            int64_t block_size) {
  const StateEntry st = table.entry[blockIdx.x];
  const int64_t steps = *st.steps + (advance ? 1 : 0);
  __syncthreads();  // every thread has read steps before thread 0 may write it
  const bool fold = advance ? steps >= block_size : steps > 0;
  if (!advance && !fold) {
    // Before a prefill with nothing to fold: delta must still be zero, since
    // the prefill kernel accumulates into it (the CPU backends ignore it here).
    const int64_t n = heads * D * D;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) st.delta[i] = 0.0f;
  }
  if (fold) {
    const int64_t n = D * D;
    for (int64_t h = 0; h < heads; ++h) {
      const float decay = float(exp(-double(slopes[h]) * double(steps)));
      float* base = st.base + h * n;
      float* delta = st.delta + h * n;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        base[i] = fmaf(decay, base[i], delta[i]);
        delta[i] = 0.0f;
      }
    }
  }
  if (threadIdx.x == 0) *st.steps = fold ? 0 : steps;
}

// One token's step for one head, each thread taking the columns d it owns:
// delta <- r delta + k^T v (r = r_hi + r_lo, rounded once) and
// out = q (delta + base_decay base), the CPU backend's arithmetic. qs and ks
// are the token's q and k rows (shared memory); v and out its rows.
__device__ void step_columns(int64_t D, float r_hi, float r_lo, float base_decay, const float* qs, const float* ks,
                             const float* v, float* delta, const float* base, float* out) {
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const float vd = v[d];
    float o = 0;
    for (int64_t i = 0; i < D; ++i) {
      const float di = delta[i * D + d];
      const float val = fmaf(di, r_hi, fmaf(di, r_lo, ks[i] * vd));
      delta[i * D + d] = val;
      o += qs[i] * val + (qs[i] * base_decay) * base[i * D + d];
    }
    out[d] = o;
  }
}

// One decode step for (sequence blockIdx.x, head blockIdx.y), thread d owning
// column d of the head's state: delta <- r delta + k^T v and
// o = q (delta + r^(steps+1) base), as the CPU backend computes it. Reads
// steps, never writes it (fold_kernel with advance does, after).
__global__ void lightning_decode_kernel(int64_t heads, int64_t D, const float* slopes, const float* q, const float* k,
                                        const float* v, StateTable table, float* out) {
  extern __shared__ float shared[];
  float* qs = shared;      // [D]
  float* ks = shared + D;  // [D]
  const int64_t b = blockIdx.x, h = blockIdx.y;
  const StateEntry st = table.entry[b];
  const int64_t off = (b * heads + h) * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    qs[i] = q[off + i];
    ks[i] = k[off + i];
  }
  __syncthreads();
  float r_hi, r_lo;
  split_decay(slopes[h], 1.0, &r_hi, &r_lo);
  // base is seen through r^(steps+1), rounded to float as the CPU backend does.
  const float base_decay = float(exp(-double(slopes[h]) * double(*st.steps + 1)));
  step_columns(D, r_hi, r_lo, base_decay, qs, ks, v + off, st.delta + h * D * D, st.base + h * D * D, out + off);
}

// Prefill of `tokens` tokens for head blockIdx.x from a folded state: decode's
// step token by token, folding every block_size tokens and at the end, so the
// state is left folded. Thread d owns column d of base and delta, so folds
// need no synchronisation; q and k rows go through shared memory.
__global__ void lightning_prefill_kernel(int64_t heads, int64_t D, const float* slopes, int64_t block_size,
                                         const float* q, const float* k, const float* v, int64_t tokens,
                                         StateEntry st, float* out) {
  extern __shared__ float shared[];
  float* qs = shared;      // [D]
  float* ks = shared + D;  // [D]
  const int64_t h = blockIdx.x;
  float* delta = st.delta + h * D * D;
  float* base = st.base + h * D * D;
  float r_hi, r_lo;
  split_decay(slopes[h], 1.0, &r_hi, &r_lo);
  int64_t steps = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t off = (t * heads + h) * D;
    __syncthreads();  // the previous token's q and k are no longer read
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      qs[i] = q[off + i];
      ks[i] = k[off + i];
    }
    __syncthreads();
    const float base_decay = float(exp(-double(slopes[h]) * double(steps + 1)));
    step_columns(D, r_hi, r_lo, base_decay, qs, ks, v + off, delta, base, out + off);
    ++steps;
    if (steps >= block_size || t + 1 == tokens) {
      const float decay = float(exp(-double(slopes[h]) * double(steps)));
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        for (int64_t i = 0; i < D; ++i) {
          base[i * D + d] = fmaf(decay, base[i * D + d], delta[i * D + d]);
          delta[i * D + d] = 0.0f;
        }
      steps = 0;
    }
  }
}

int64_t blocks_for(int64_t n, int threads) { return (n + threads - 1) / threads; }

}  // namespace

void rms_norm(cudaStream_t stream, const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps) {
  rms_norm_kernel<<<rows, 256, 0, stream>>>(x, weight, y, dim, eps);
}

void rope(cudaStream_t stream, float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t rotary_dim, float theta) {
  const int64_t n = tokens * heads * (rotary_dim / 2);
  rope_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, positions, tokens, heads, head_dim, rotary_dim, theta);
}

void silu_mul(cudaStream_t stream, const float* gate, const float* up, float* out, int64_t n) {
  silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, out, n);
}

void silu_inplace(cudaStream_t stream, float* x, int64_t n) {
  silu_inplace_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, n);
}

void sigmoid_gate(cudaStream_t stream, const float* gate, float* x, int64_t n) {
  sigmoid_gate_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, x, n);
}

void log_softmax_gather(cudaStream_t stream, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                        float* out) {
  log_softmax_gather_kernel<<<rows, 256, 0, stream>>>(logits, targets, vocab, out);
}

void moe_route(cudaStream_t stream, const float* logits, int64_t tokens, int64_t experts, int64_t top_k, int32_t* index,
               float* weight) {
  moe_route_kernel<<<blocks_for(tokens, 64), 64, 0, stream>>>(logits, tokens, experts, top_k, index, weight);
}

void attention(cudaStream_t stream, int64_t queries, int64_t q_heads, int64_t kv_heads, int64_t head_dim, float scale,
               int64_t window, bool bf16, const float* q, const KvTable& table, int64_t q_start, float* out) {
  const dim3 grid(static_cast<unsigned>(queries), static_cast<unsigned>(q_heads));
  attention_kernel<<<grid, kThreads, (head_dim + kThreads) * sizeof(float), stream>>>(
      q_heads, kv_heads, head_dim, scale, window, bf16, q, table, q_start, out);
}

void lightning_fold(cudaStream_t stream, int64_t sequences, int64_t heads, int64_t head_dim, const float* slopes,
                    const StateTable& table, bool advance, int64_t block_size) {
  fold_kernel<<<unsigned(sequences), 256, 0, stream>>>(heads, head_dim, slopes, table, advance, block_size);
}

void lightning_decode(cudaStream_t stream, int64_t sequences, int64_t heads, int64_t head_dim, const float* slopes,
                      const float* q, const float* k, const float* v, const StateTable& table, float* out) {
  lightning_decode_kernel<<<dim3(unsigned(sequences), unsigned(heads)), kThreads, 2 * head_dim * sizeof(float), stream>>>(
      heads, head_dim, slopes, q, k, v, table, out);
}

void lightning_prefill(cudaStream_t stream, int64_t heads, int64_t head_dim, const float* slopes, int64_t block_size,
                       const float* q, const float* k, const float* v, int64_t tokens, StateEntry state, float* out) {
  lightning_prefill_kernel<<<unsigned(heads), kThreads, 2 * head_dim * sizeof(float), stream>>>(
      heads, head_dim, slopes, block_size, q, k, v, tokens, state, out);
}

}  // namespace interlace::kernels::cuda::detail
