// The one interface every numeric op sits behind.
//
// Three implementations exist or will: a plain reference (obviously correct,
// single threaded, double accumulation), a fast CPU one (oneDNN GEMM, OpenMP,
// vectorised loops) and a CUDA one (kernels/cuda). Pointers are row-major
// fp32 arrays unless a comment says otherwise; sizes are element counts.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "interlace/core/dtype.h"

namespace interlace::kernels {

// Keys and values of one sequence for one softmax layer: `length` rows of
// [kv_heads, head_dim], stored in the AttentionShape's kv_dtype (f32 or bf16).
struct KvView {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t length = 0;
};

struct AttentionShape {
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;      // usually head_dim^-0.5
  int64_t window = 0;      // sliding window: key j visible to query i iff i - window < j <= i; 0 = none
  core::DType kv_dtype = core::DType::kF32;
};

// The recurrent state of one lightning layer for one sequence, kept in two parts
// so that decode rounds like the blocked prefill does, once per block rather than
// once per token (an fp32 state rounded every step drifts by ~2e-5 relative over
// 8K tokens of a slowly decaying head):
//   S = exp(-s * steps) * base + delta
// Decode accumulates the recent tokens into `delta` and folds it into `base`
// every block_size steps; prefill folds first and then updates `base` per block.
struct LightningState {
  float* base = nullptr;   // [heads, head_dim, head_dim]
  float* delta = nullptr;  // [heads, head_dim, head_dim]
  int64_t* steps = nullptr;
};

struct LightningShape {
  int64_t heads = 0;
  int64_t head_dim = 0;
  const float* slopes = nullptr;  // per-head decay rate s_h (decay per step is exp(-s_h))
  int64_t block_size = 256;       // prefill block length
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // y[m,n] = x[m,k] . w[n,k]^T (the nn.Linear weight layout).
  virtual void linear(const float* x, const float* w, float* y, int64_t m, int64_t n,
                      int64_t k) = 0;
  // y = x / sqrt(mean(x^2) + eps) * weight, per row of `dim`.
  virtual void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim,
                        float eps) = 0;
  // Rotary embedding in place on x[tokens, heads, head_dim], rotate-half convention,
  // only the first `rotary_dim` dims of each head rotate. inv_freq[i] = theta^(-2i/rotary_dim).
  virtual void rope(float* x, const int64_t* positions, int64_t tokens, int64_t heads,
                    int64_t head_dim, int64_t rotary_dim, float theta) = 0;
  // out = silu(gate) * up, elementwise.
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) = 0;
  // x = silu(x), elementwise.
  virtual void silu_inplace(float* x, int64_t n) = 0;
  // x = sigmoid(gate) * x, elementwise.
  virtual void sigmoid_gate(const float* gate, float* x, int64_t n) = 0;

  // Causal softmax attention for `tokens` queries q[tokens, q_heads, head_dim] at absolute
  // positions q_start .. q_start+tokens-1 over keys kv[0, q_start+tokens).
  virtual void attention_prefill(const AttentionShape& s, const float* q, const KvView& kv,
                                 int64_t q_start, int64_t tokens, float* out) = 0;
  // One query per sequence: q[batch, q_heads, head_dim] at position kv[b].length-1.
  virtual void attention_decode(const AttentionShape& s, const float* q,
                                std::span<const KvView> kv, float* out) = 0;

  // Lightning attention over q, k, v [tokens, heads, head_dim] in the blocked form,
  // continuing from `state` (updated in place; the cpu and reference backends
  // leave it folded: delta 0, steps 0; the strict one as decode steps would).
  virtual void lightning_prefill(const LightningShape& s, const float* q, const float* k,
                                 const float* v, int64_t tokens, const LightningState& state,
                                 float* out) = 0;
  // One step of the recurrence S <- exp(-s) S + k^T v, o = q S for a batch:
  // q, k, v [batch, heads, head_dim], states[b] is that sequence's state.
  virtual void lightning_decode(const LightningShape& s, const float* q, const float* k,
                                const float* v, std::span<const LightningState> states,
                                float* out) = 0;

  // Mixtral routing: softmax over experts (fp32), top-k, weights renormalised to sum 1.
  // index/weight are [tokens, top_k], highest weight first.
  virtual void moe_route(const float* logits, int64_t tokens, int64_t experts, int64_t top_k,
                         int32_t* index, float* weight) = 0;
  // out[r] = log_softmax(logits[r, :])[targets[r]].
  virtual void log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows,
                                  int64_t vocab, float* out) = 0;
};

// Folds a state in place: base <- exp(-s*steps) base + delta, delta <- 0, steps <- 0.
void fold_lightning_state(const LightningShape& s, const LightningState& state);

// The process-wide fast CPU backend.
Backend& cpu_backend();
Backend& reference_backend();
// Batch- and split-invariant kernels: a whole-sequence forward equals token-by-
// token decode bit for bit (the strict precision profile). See strict_backend.cc.
Backend& strict_backend();

// Lightning decay slope of head h (0-based) of `heads` in layer `layer` of `layers`,
// as MiniMax defines it: 2^(-8(h+1)/heads) * (1 - layer/(layers-1+1e-5) + 1e-5).
float lightning_slope(int64_t h, int64_t heads, int64_t layer, int64_t layers);

}  // namespace interlace::kernels
