// The strict backend: every output is computed one row (one query, one token)
// at a time by the same code, in the same order, whatever the batch, the
// sequence split or the number of threads. So a whole-sequence forward (the
// learner's) and token-by-token decode (the rollout's) give bitwise equal
// results, and so does a batch against its sequences run alone.
//
//  - linear: each output element is simd::dot over k in a fixed order (no GEMM
//    blocking, so ~GEMV speed: the price of batch invariance);
//  - attention: prefill runs the decode kernel for each query row;
//  - lightning: prefill runs the decode recurrence token by token (the cpu
//    decode, one sequence per call: each head is computed by one thread, so its
//    result does not depend on the thread count); the state is left as those
//    decode steps leave it (not folded at the end), so prefill-then-decode and
//    decode-only continue from the same representation;
//  - elementwise ops: plain scalar loops (no vector math library whose results
//    could depend on an element's position in a SIMD lane);
//  - row-wise ops (RMSNorm, RoPE, routing, log-softmax): the cpu kernels, whose
//    rows are independent and computed by one thread each.
#include <cmath>
#include <vector>

#include "interlace/core/dtype.h"
#include "interlace/core/status.h"
#include "interlace/kernels/backend.h"
#include "simd.h"

namespace interlace::kernels {
namespace {

class StrictBackend final : public Backend {
 public:
  std::string_view name() const override { return "strict"; }

  void linear(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) override {
    // Column blocks of W stay in cache across rows; the element's arithmetic
    // never depends on the blocking.
    constexpr int64_t kBlock = 64;
#pragma omp parallel for collapse(2) schedule(static) if (m * n * k > (1 << 16))
    for (int64_t jb = 0; jb < n; jb += kBlock)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = jb; j < std::min(n, jb + kBlock); ++j) y[i * n + j] = simd::dot(x + i * k, w + j * k, k);
  }

  void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps) override {
    cpu_backend().rms_norm(x, weight, y, rows, dim, eps);
  }
  void rope(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
            int64_t rotary_dim, float theta) override {
    cpu_backend().rope(x, positions, tokens, heads, head_dim, rotary_dim, theta);
  }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
  }
  void silu_inplace(float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
  }
  void sigmoid_gate(const float* gate, float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-gate[i]));
  }

  void attention_prefill(const AttentionShape& s, const float* q, const KvView& kv, int64_t q_start, int64_t tokens,
                         float* out) override {
    const int64_t row = s.q_heads * s.head_dim;
#pragma omp parallel for schedule(dynamic) if (tokens > 1)
    for (int64_t t = 0; t < tokens; ++t)
      attend_one(s, q + t * row, {kv.k, kv.v, q_start + t + 1}, out + t * row);
  }
  void attention_decode(const AttentionShape& s, const float* q, std::span<const KvView> kv, float* out) override {
    const int64_t row = s.q_heads * s.head_dim, B = static_cast<int64_t>(kv.size());
#pragma omp parallel for schedule(dynamic) if (B > 1)
    for (int64_t b = 0; b < B; ++b) attend_one(s, q + b * row, kv[b], out + b * row);
  }

  void lightning_prefill(const LightningShape& s, const float* q, const float* k, const float* v, int64_t tokens,
                         const LightningState& state, float* out) override {
    const int64_t row = s.heads * s.head_dim;
    for (int64_t t = 0; t < tokens; ++t)
      cpu_backend().lightning_decode(s, q + t * row, k + t * row, v + t * row, {&state, 1}, out + t * row);
  }
  void lightning_decode(const LightningShape& s, const float* q, const float* k, const float* v,
                        std::span<const LightningState> states, float* out) override {
    const int64_t row = s.heads * s.head_dim;
    for (size_t b = 0; b < states.size(); ++b)
      cpu_backend().lightning_decode(s, q + b * row, k + b * row, v + b * row, states.subspan(b, 1), out + b * row);
  }

  void moe_route(const float* logits, int64_t tokens, int64_t experts, int64_t top_k, int32_t* index,
                 float* weight) override {
    cpu_backend().moe_route(logits, tokens, experts, top_k, index, weight);
  }
  void log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                          float* out) override {
    cpu_backend().log_softmax_gather(logits, targets, rows, vocab, out);
  }

 private:
  static float silu(float z) { return z / (1.0f + std::exp(-z)); }

  // One query (all heads) at position kv.length-1 over keys [first, length).
  // bf16 keys and values are widened row by row (exactly: bf16 -> f32 is exact).
  static void attend_one(const AttentionShape& s, const float* q, const KvView& kv, float* out) {
    const int64_t D = s.head_dim, Hk = s.kv_heads, group = s.q_heads / Hk, pos = kv.length - 1;
    const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
    const bool bf16 = s.kv_dtype == core::DType::kBF16;
    INTERLACE_CHECK(bf16 || s.kv_dtype == core::DType::kF32, "strict attention: KV must be f32 or bf16");
    std::vector<float> scratch(D);
    auto row = [&](const void* base, int64_t j, int64_t kh) -> const float* {
      const int64_t at = (j * Hk + kh) * D;
      if (!bf16) return static_cast<const float*>(base) + at;
      const uint16_t* src = static_cast<const uint16_t*>(base) + at;
      for (int64_t d = 0; d < D; ++d) scratch[d] = core::bf16_to_float(src[d]);
      return scratch.data();
    };
    std::vector<float> p(pos + 1 - first);
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t kh = h / group;
      const float* qh = q + h * D;
      float mx = -INFINITY;
      for (int64_t j = first; j <= pos; ++j) {
        p[j - first] = simd::dot(qh, row(kv.k, j, kh), D) * s.scale;
        mx = std::max(mx, p[j - first]);
      }
      float sum = 0;
      for (float& x : p) sum += x = std::exp(x - mx);
      float* o = out + h * D;
      for (int64_t d = 0; d < D; ++d) o[d] = 0;
      for (int64_t j = first; j <= pos; ++j) {
        const float* vj = row(kv.v, j, kh);
        const float w = p[j - first];
        for (int64_t d = 0; d < D; ++d) o[d] += w * vj[d];
      }
      const float inv = 1.0f / sum;
      for (int64_t d = 0; d < D; ++d) o[d] *= inv;
    }
  }
};

}  // namespace

Backend& strict_backend() {
  static StrictBackend backend;
  return backend;
}

}  // namespace interlace::kernels
