// Fast CPU implementations: oneDNN's sgemm for every matrix product (it picks
// AVX-512/AMX kernels itself; Debian's OpenBLAS falls back to SSE3 on these
// machines), OpenMP across rows/heads, and loops written so GCC vectorises them.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "interlace/core/status.h"
#include "interlace/kernels/backend.h"
#include "interlace/kernels/gemm.h"
#include "kv_access.h"
#include "simd.h"

namespace interlace::kernels {
namespace {

inline float silu(float g) { return g / (1.0f + std::exp(-g)); }

inline void prefetch_bytes(const char* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  void linear(const float* x, const float* w, float* y, int64_t m, int64_t n,
              int64_t k) override {
    // Tiny products (routers, small heads) cost less than a oneDNN call with its
    // thread fork and join.
    if (m * n * k <= (int64_t{1} << 15)) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) y[i * n + j] = simd::dot(x + i * k, w + j * k, k);
      return;
    }
    sgemm(false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
  }

  void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim,
                float eps) override {
#pragma omp parallel for if (rows * dim > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      const float ss = simd::sum_squares(xr, dim);
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
      for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] * inv) * weight[i];
    }
  }

  void rope(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
            int64_t rotary_dim, float theta) override {
    const int64_t half = rotary_dim / 2;
    std::vector<float> inv_freq(half);
    // As transformers computes it: in fp32, theta ** (2i / dim).
    for (int64_t i = 0; i < half; ++i)
      inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rotary_dim));
#pragma omp parallel for if (tokens > 16)
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<float> c(half), s(half);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        c[i] = std::cos(angle);
        s[i] = std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* p = x + (t * heads + h) * head_dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = p[i], b = p[i + half];
          p[i] = a * c[i] - b * s[i];
          p[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  }

  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
  }

  void silu_inplace(float* x, int64_t n) override {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
  }

  void sigmoid_gate(const float* gate, float* x, int64_t n) override {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-gate[i]));
  }

  void attention_prefill(const AttentionShape& s, const float* q, const KvView& kv,
                         int64_t q_start, int64_t tokens, float* out) override;
  void attention_decode(const AttentionShape& s, const float* q, std::span<const KvView> kv,
                        float* out) override;
  void lightning_prefill(const LightningShape& s, const float* q, const float* k, const float* v,
                         int64_t tokens, const LightningState& state, float* out) override;
  void lightning_decode(const LightningShape& s, const float* q, const float* k, const float* v,
                        std::span<const LightningState> states, float* out) override;

  void moe_route(const float* logits, int64_t tokens, int64_t experts, int64_t top_k,
                 int32_t* index, float* weight) override {
#pragma omp parallel for if (tokens > 64)
    for (int64_t t = 0; t < tokens; ++t) {
      const float* l = logits + t * experts;
      std::vector<float> p(experts);
      std::vector<int32_t> order(experts);
      const float mx = *std::max_element(l, l + experts);
      float sum = 0;
      for (int64_t e = 0; e < experts; ++e) sum += p[e] = std::exp(l[e] - mx);
      for (int64_t e = 0; e < experts; ++e) p[e] /= sum;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t a, int32_t b) {
        return p[a] > p[b] || (p[a] == p[b] && a < b);
      });
      float top_sum = 0;
      for (int64_t i = 0; i < top_k; ++i) top_sum += p[order[i]];
      for (int64_t i = 0; i < top_k; ++i) {
        index[t * top_k + i] = order[i];
        weight[t * top_k + i] = p[order[i]] / top_sum;
      }
    }
  }

  void log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows,
                          int64_t vocab, float* out) override {
#pragma omp parallel for if (rows * vocab > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      const float* l = logits + r * vocab;
      float mx = -INFINITY;
      for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, l[i]);
      float sum = 0;
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(l[i] - mx);
      out[r] = l[targets[r]] - mx - std::log(sum);
    }
  }
};

// Query rows are processed in tiles so the score matrix never exceeds
// kQueryTile x (visible keys), whatever the sequence length.
constexpr int64_t kQueryTile = 64;

void CpuBackend::attention_prefill(const AttentionShape& s, const float* q, const KvView& kv,
                                   int64_t q_start, int64_t tokens, float* out) {
  const int64_t D = s.head_dim, Hq = s.q_heads, Hk = s.kv_heads, group = Hq / Hk;
  const int64_t total = q_start + tokens;
  // Keys/values of one kv head as contiguous f32 [total, D] when the cache is bf16;
  // f32 caches are read in place with a row stride.
  const bool convert = s.kv_dtype != core::DType::kF32;
  std::vector<std::vector<float>> kf(convert ? Hk : 0), vf(convert ? Hk : 0);
  if (convert) {
#pragma omp parallel for
    for (int64_t h = 0; h < Hk; ++h) {
      kf[h].resize(total * D);
      vf[h].resize(total * D);
      for (int64_t j = 0; j < total; ++j) {
        load_kv_row(s.kv_dtype, kv.k, j, Hk, h, D, kf[h].data() + j * D);
        load_kv_row(s.kv_dtype, kv.v, j, Hk, h, D, vf[h].data() + j * D);
      }
    }
  }
  const int64_t tiles = (tokens + kQueryTile - 1) / kQueryTile;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t kvh = h / group;
        const float* kb = convert ? kf[kvh].data() : static_cast<const float*>(kv.k) + kvh * D;
        const float* vb = convert ? vf[kvh].data() : static_cast<const float*>(kv.v) + kvh * D;
        const int64_t ld = convert ? D : Hk * D;
        const int64_t t0 = tile * kQueryTile, rows = std::min(kQueryTile, tokens - t0);
        const int64_t last_pos = q_start + t0 + rows - 1;
        const int64_t first_pos = q_start + t0;
        const int64_t key_begin = s.window > 0 ? std::max<int64_t>(0, first_pos - s.window + 1) : 0;
        const int64_t nkeys = last_pos + 1 - key_begin;
        scores.resize(rows * nkeys);
        sgemm(false, true, rows, nkeys, D, s.scale, q + (t0 * Hq + h) * D, Hq * D,
              kb + key_begin * ld, ld, 0.0f, scores.data(), nkeys);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = first_pos + r;
          const int64_t lo = (s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0) - key_begin;
          const int64_t hi = pos - key_begin;  // inclusive
          float* sr = scores.data() + r * nkeys;
          float mx = -INFINITY;
          for (int64_t j = lo; j <= hi; ++j) mx = std::max(mx, sr[j]);
          std::fill(sr, sr + lo, 0.0f);
          std::fill(sr + hi + 1, sr + nkeys, 0.0f);
          const float inv = 1.0f / simd::exp_shift_sum(sr + lo, hi + 1 - lo, mx);
          for (int64_t j = lo; j <= hi; ++j) sr[j] *= inv;
        }
        sgemm(false, false, rows, D, nkeys, 1.0f, scores.data(), nkeys, vb + key_begin * ld, ld,
              0.0f, out + (t0 * Hq + h) * D, Hq * D);
      }
  }
}

// Split-K ("flash decoding"): each task takes a chunk of positions of one
// sequence for all heads, so keys and values are read front to back (reading one
// head's rows would stride by kv_heads*head_dim and defeat the prefetchers), and
// keeps a partial softmax (max, sum, unnormalised output) that is merged after.
void CpuBackend::attention_decode(const AttentionShape& s, const float* q,
                                  std::span<const KvView> kv, float* out) {
  const int64_t D = s.head_dim, Hq = s.q_heads, Hk = s.kv_heads, group = Hq / Hk;
  const int64_t B = static_cast<int64_t>(kv.size());
  const bool bf16 = s.kv_dtype == core::DType::kBF16;
  const int64_t es = bf16 ? 2 : 4;
  // Positions per task: at most 256 (the scratch size), fewer when a short
  // context would otherwise leave threads idle.
  int64_t max_len = 1;
  for (const KvView& v : kv) max_len = std::max(max_len, v.length);
  const int64_t want_tasks = 2 * static_cast<int64_t>(omp_get_max_threads());
  const int64_t kChunk = std::clamp<int64_t>((B * max_len + want_tasks - 1) / want_tasks, 32, 256);
  // Rows ahead to prefetch: a row is often exactly one 4 KiB page, and hardware
  // prefetchers do not cross pages.
  constexpr int64_t kPrefetchRows = 4;
  struct Task {
    int64_t b, begin, end;
  };
  std::vector<Task> tasks;
  std::vector<int64_t> first_task(B + 1);
  for (int64_t b = 0; b < B; ++b) {
    first_task[b] = static_cast<int64_t>(tasks.size());
    const int64_t pos = kv[b].length - 1;
    const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
    for (int64_t j = first; j <= pos; j += kChunk) tasks.push_back({b, j, std::min(pos + 1, j + kChunk)});
  }
  first_task[B] = static_cast<int64_t>(tasks.size());
  const int64_t nt = static_cast<int64_t>(tasks.size());
  std::vector<float> part_max(nt * Hq), part_sum(nt * Hq), part_out(nt * Hq * D);
#pragma omp parallel if (nt > 1 || B * Hq * kChunk > 4096)
  {
    std::vector<float> scores(Hq * kChunk), krow(D);  // kChunk is the row stride of scores
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < nt; ++t) {
      const Task& task = tasks[t];
      const int64_t n = task.end - task.begin;
      const float* qb = q + task.b * Hq * D;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t row = (task.begin + j) * Hk * D;
        if (j + kPrefetchRows < n) prefetch_bytes(static_cast<const char*>(kv[task.b].k) + (row + kPrefetchRows * Hk * D) * es, Hk * D * es);
        for (int64_t kvh = 0; kvh < Hk; ++kvh) {
          // A bf16 row is widened once and shared by the whole query group.
          const float* kr;
          if (bf16) {
            simd::bf16_to_f32(static_cast<const uint16_t*>(kv[task.b].k) + row + kvh * D, krow.data(), D);
            kr = krow.data();
          } else {
            kr = static_cast<const float*>(kv[task.b].k) + row + kvh * D;
          }
          for (int64_t g = 0; g < group; ++g) {
            const int64_t h = kvh * group + g;
            scores[h * kChunk + j] = simd::dot(qb + h * D, kr, D) * s.scale;
          }
        }
      }
      for (int64_t h = 0; h < Hq; ++h) {
        float* sh = scores.data() + h * kChunk;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sh[j]);
        const float sum = simd::exp_shift_sum(sh, n, mx);
        part_max[t * Hq + h] = mx;
        part_sum[t * Hq + h] = sum;
      }
      float* o = part_out.data() + t * Hq * D;
      std::fill(o, o + Hq * D, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t row = (task.begin + j) * Hk * D;
        if (j + kPrefetchRows < n) prefetch_bytes(static_cast<const char*>(kv[task.b].v) + (row + kPrefetchRows * Hk * D) * es, Hk * D * es);
        for (int64_t kvh = 0; kvh < Hk; ++kvh) {
          const float* vr;
          if (bf16) {
            simd::bf16_to_f32(static_cast<const uint16_t*>(kv[task.b].v) + row + kvh * D, krow.data(), D);
            vr = krow.data();
          } else {
            vr = static_cast<const float*>(kv[task.b].v) + row + kvh * D;
          }
          for (int64_t g = 0; g < group; ++g) {
            const int64_t h = kvh * group + g;
            simd::axpy(scores[h * kChunk + j], vr, o + h * D, D);
          }
        }
      }
    }
  }
  // Merge the chunks of each sequence: rescale to the global max and normalise.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      float mx = -INFINITY;
      for (int64_t t = first_task[b]; t < first_task[b + 1]; ++t) mx = std::max(mx, part_max[t * Hq + h]);
      float total = 0;
      float* dst = out + (b * Hq + h) * D;
      std::fill(dst, dst + D, 0.0f);
      for (int64_t t = first_task[b]; t < first_task[b + 1]; ++t) {
        const float w = std::exp(part_max[t * Hq + h] - mx);
        total += w * part_sum[t * Hq + h];
        simd::axpy(w, part_out.data() + (t * Hq + h) * D, dst, D);
      }
      const float inv = 1.0f / total;
      for (int64_t d = 0; d < D; ++d) dst[d] *= inv;
    }
}

// Blocked lightning attention, per head and block of c tokens starting at t0:
//   O   = ((Q K^T) .* M) V + diag(exp(-s(i+1))) Q S          M[i][j] = exp(-s(i-j)), j <= i
//   S  <- exp(-s c) S + (diag(exp(-s(c-1-j))) K)^T V
// Decay factors are computed in double and rounded once, so long sequences do not
// accumulate the bias a rounded per-step ratio would.
void CpuBackend::lightning_prefill(const LightningShape& s, const float* q, const float* k,
                                   const float* v, int64_t tokens, const LightningState& state,
                                   float* out) {
  const int64_t H = s.heads, D = s.head_dim, B = std::max<int64_t>(1, s.block_size);
  const int64_t ld = H * D;
  fold_lightning_state(s, state);
#pragma omp parallel
  {
    std::vector<float> scores(B * B), decay(B + 1), kscaled(B * D), qs(B * D);
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < H; ++h) {
      const double slope = s.slopes[h];
      for (int64_t i = 0; i <= B; ++i) decay[i] = static_cast<float>(std::exp(-slope * double(i)));
      float* S = state.base + h * D * D;
      for (int64_t t0 = 0; t0 < tokens; t0 += B) {
        const int64_t c = std::min(B, tokens - t0);
        const float* qb = q + t0 * ld + h * D;
        const float* kb = k + t0 * ld + h * D;
        const float* vb = v + t0 * ld + h * D;
        float* ob = out + t0 * ld + h * D;
        // Intra-block: masked, decayed scores times V.
        sgemm(false, true, c, c, D, 1.0f, qb, ld, kb, ld, 0.0f, scores.data(), c);
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < c; ++j) scores[i * c + j] *= (j <= i) ? decay[i - j] : 0.0f;
        sgemm(false, false, c, D, c, 1.0f, scores.data(), c, vb, ld, 0.0f, ob, ld);
        // Inter-block: Q S, rows decayed by exp(-s(i+1)).
        sgemm(false, false, c, D, D, 1.0f, qb, ld, S, D, 0.0f, qs.data(), D);
        for (int64_t i = 0; i < c; ++i) {
          const float di = decay[i + 1];
          float* o = ob + i * ld;
          const float* r = qs.data() + i * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) o[d] += di * r[d];
        }
        // State update.
        for (int64_t j = 0; j < c; ++j) {
          const float dj = decay[c - 1 - j];
          const float* kr = kb + j * ld;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) kscaled[j * D + d] = dj * kr[d];
        }
        const float block_decay = decay[c];
        sgemm(true, false, D, D, c, 1.0f, kscaled.data(), D, vb, ld, block_decay, S, D);
      }
    }
  }
}

// One recurrence step, fused into a single pass over the state:
//   delta <- r delta + k^T v;   o = q delta + r^steps (q base)
// r = exp(-s) is applied as r_hi + r_lo (two floats) so that many steps do not
// compound the rounding of r into a biased decay. Every block_size steps delta
// is folded into base, so the state is rounded as often as in the blocked form.
void CpuBackend::lightning_decode(const LightningShape& s, const float* q, const float* k,
                                  const float* v, std::span<const LightningState> states,
                                  float* out) {
  const int64_t H = s.heads, D = s.head_dim, Bn = static_cast<int64_t>(states.size());
  INTERLACE_CHECK(D <= 512, "lightning head_dim above 512");
#pragma omp parallel for collapse(2) if (Bn * H > 1)
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const double slope = s.slopes[h];
      const double r = std::exp(-slope);
      const float r_hi = static_cast<float>(r);
      const float r_lo = static_cast<float>(r - double(r_hi));
      // base is seen through r^(steps+1): steps decays so far plus this step's.
      const float base_decay = static_cast<float>(std::exp(-slope * double(*states[b].steps + 1)));
      const int64_t off = (b * H + h) * D;
      const float* qb = q + off;
      const float* kb = k + off;
      const float* vb = v + off;
      float* delta = states[b].delta + h * D * D;
      const float* base = states[b].base + h * D * D;
      float o[512];
      std::fill(o, o + D, 0.0f);
      for (int64_t i = 0; i < D; ++i) {
        float* di = delta + i * D;
        const float* bi = base + i * D;
        const float ki = kb[i], qi = qb[i], qbase = qb[i] * base_decay;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          const float val = std::fma(di[d], r_hi, std::fma(di[d], r_lo, ki * vb[d]));
          di[d] = val;
          o[d] += qi * val + qbase * bi[d];
        }
      }
      std::copy(o, o + D, out + off);
    }
  for (int64_t b = 0; b < Bn; ++b) {
    ++*states[b].steps;
    if (*states[b].steps >= std::max<int64_t>(1, s.block_size)) fold_lightning_state(s, states[b]);
  }
}

}  // namespace

std::unique_ptr<Backend> make_reference_backend();

Backend& cpu_backend() {
  static std::unique_ptr<Backend> backend = std::make_unique<CpuBackend>();
  return *backend;
}

Backend& reference_backend() {
  static std::unique_ptr<Backend> backend = make_reference_backend();
  return *backend;
}

void fold_lightning_state(const LightningShape& s, const LightningState& state) {
  const int64_t steps = *state.steps, n = s.head_dim * s.head_dim;
  if (steps == 0) return;
  for (int64_t h = 0; h < s.heads; ++h) {
    const float decay = static_cast<float>(std::exp(-double(s.slopes[h]) * double(steps)));
    float* base = state.base + h * n;
    float* delta = state.delta + h * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      base[i] = std::fma(decay, base[i], delta[i]);
      delta[i] = 0.0f;
    }
  }
  *state.steps = 0;
}

float lightning_slope(int64_t h, int64_t heads, int64_t layer, int64_t layers) {
  // Same operation order as transformers: base^(h+1) * factor, in double then rounded.
  const double base = 1.0 / std::pow(2.0, 8.0 / double(heads));
  const double factor = 1.0 - double(layer) / (double(layers) - 1.0 + 1e-5) + 1e-5;
  return static_cast<float>(std::pow(base, double(h + 1)) * factor);
}

}  // namespace interlace::kernels
