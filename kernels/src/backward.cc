#include "interlace/kernels/backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "interlace/core/status.h"
#include "interlace/kernels/gemm.h"

namespace interlace::kernels::backward {

void linear(const float* x, const float* w, const float* dy, int64_t m, int64_t n, int64_t k,
            float* dx, float* dw) {
  if (dx) sgemm(false, false, m, k, n, 1.0f, dy, n, w, k, 1.0f, dx, k);
  if (dw) sgemm(true, false, n, k, m, 1.0f, dy, n, x, k, 1.0f, dw, k);
}

void rms_norm(const float* x, const float* weight, const float* dy, int64_t rows, int64_t dim,
              float eps, float* dx, float* dweight) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* g = dy + r * dim;
    double ss = 0, dot = 0;
    for (int64_t i = 0; i < dim; ++i) {
      ss += double(xr[i]) * xr[i];
      dot += double(g[i]) * weight[i] * xr[i];
    }
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    if (dweight)
      for (int64_t i = 0; i < dim; ++i) dweight[i] += static_cast<float>(g[i] * xr[i] * inv);
    if (dx) {
      const double c = inv * inv * inv * dot / dim;
      for (int64_t i = 0; i < dim; ++i)
        dx[r * dim + i] += static_cast<float>(inv * weight[i] * g[i] - c * xr[i]);
    }
  }
}

void rope(float* dx, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t rotary_dim, float theta) {
  const int64_t half = rotary_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rotary_dim));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (int64_t h = 0; h < heads; ++h) {
        float* p = dx + (t * heads + h) * head_dim;
        const float a = p[i], b = p[i + half];
        // Transpose of [c -s; s c] is the rotation by -angle.
        p[i] = a * c + b * s;
        p[i + half] = b * c - a * s;
      }
    }
}

namespace {
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}
}  // namespace

void silu_mul(const float* gate, const float* up, const float* dout, int64_t n, float* dgate,
              float* dup) {
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    if (dgate) dgate[i] += static_cast<float>(dout[i] * up[i] * silu_grad(g));
    if (dup) dup[i] += static_cast<float>(dout[i] * g * sigmoid(g));
  }
}

void silu(const float* x, const float* dy, int64_t n, float* dx) {
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) dx[i] += static_cast<float>(dy[i] * silu_grad(x[i]));
}

void sigmoid_gate(const float* gate, const float* x, const float* dy, int64_t n, float* dgate,
                  float* dx) {
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const double s = sigmoid(gate[i]);
    if (dgate) dgate[i] += static_cast<float>(dy[i] * x[i] * s * (1.0 - s));
    if (dx) dx[i] += static_cast<float>(dy[i] * s);
  }
}

void cross_entropy(const float* logits, const int32_t* targets, const float* scale, int64_t rows,
                   int64_t vocab, float* dlogits) {
#pragma omp parallel for if (rows * vocab > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    if (scale[r] == 0.0f) continue;
    const float* l = logits + r * vocab;
    const float mx = *std::max_element(l, l + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(l[i]) - mx);
    for (int64_t i = 0; i < vocab; ++i) {
      const double p = std::exp(double(l[i]) - mx) / sum;
      dlogits[r * vocab + i] += static_cast<float>(scale[r] * (p - (i == targets[r] ? 1.0 : 0.0)));
    }
  }
}

// Tiled over query rows (kQueryTile at a time) so no T x T matrix is held; each
// tile's score, probability and gradient matrices are small GEMMs (oneDNN runs
// single-threaded inside our parallel region). Tasks are (query head, tile):
// dq rows belong to one task; dk and dv rows are shared by the tiles and heads
// of a kv head, so each thread accumulates them privately and they are summed
// at the end. The tasks go to threads in a fixed round-robin (static, chunks of
// one, which also balances the causal tiles' growing cost): with a dynamic
// schedule which thread summed which tiles changed from run to run, and with it
// the rounding, so two SFT runs of one spec were not bit-identical.
void attention(const AttentionShape& s, const float* q, const float* k, const float* v,
               const float* dout, int64_t tokens, float* dq, float* dk, float* dv) {
  INTERLACE_CHECK(s.kv_dtype == core::DType::kF32, "attention backward needs f32 keys and values");
  constexpr int64_t kQueryTile = 64;
  const int64_t D = s.head_dim, Hq = s.q_heads, Hk = s.kv_heads, group = Hq / Hk, T = tokens;
  const int64_t qs = Hq * D, ks = Hk * D;  // row strides
  const int64_t tiles = (T + kQueryTile - 1) / kQueryTile;
  const int64_t kv_size = T * ks;
  std::vector<std::vector<float>> dk_part, dv_part;
#pragma omp parallel
  {
#pragma omp single
    {
      dk_part.resize(omp_get_num_threads());
      dv_part.resize(omp_get_num_threads());
    }
    std::vector<float>& dkl = dk_part[omp_get_thread_num()];
    std::vector<float>& dvl = dv_part[omp_get_thread_num()];
    dkl.assign(kv_size, 0.0f);
    dvl.assign(kv_size, 0.0f);
    std::vector<float> p, dp;
#pragma omp for collapse(2) schedule(static, 1)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t kvh = h / group, t0 = tile * kQueryTile, t1 = std::min(T, t0 + kQueryTile), m = t1 - t0;
        const int64_t kstart = s.window > 0 ? std::max<int64_t>(0, t0 - s.window + 1) : 0, L = t1 - kstart;
        const float* qt = q + t0 * qs + h * D;
        const float* dot = dout + t0 * qs + h * D;
        const float* kt = k + kstart * ks + kvh * D;
        const float* vt = v + kstart * ks + kvh * D;
        p.resize(m * L);
        dp.resize(m * L);
        sgemm(false, true, m, L, D, s.scale, qt, qs, kt, ks, 0.0f, p.data(), L);  // scores
        sgemm(false, true, m, L, D, 1.0f, dot, qs, vt, ks, 0.0f, dp.data(), L);   // dO V^T
        for (int64_t i = 0; i < m; ++i) {
          const int64_t t = t0 + i;
          const int64_t lo = (s.window > 0 ? std::max<int64_t>(0, t - s.window + 1) : 0) - kstart, hi = t - kstart;
          float* pr = p.data() + i * L;
          float* dr = dp.data() + i * L;
          float mx = -INFINITY;
          for (int64_t j = lo; j <= hi; ++j) mx = std::max(mx, pr[j]);
          float sum = 0;
          for (int64_t j = lo; j <= hi; ++j) sum += pr[j] = std::exp(pr[j] - mx);
          const float inv = 1.0f / sum;
          float pdp = 0;
          for (int64_t j = lo; j <= hi; ++j) {
            pr[j] *= inv;
            pdp += pr[j] * dr[j];
          }
          // dr becomes dS = P (dP - sum P dP) * scale; masked entries are 0 in both.
          for (int64_t j = 0; j < L; ++j) {
            if (j < lo || j > hi) {
              pr[j] = 0.0f;
              dr[j] = 0.0f;
            } else {
              dr[j] = pr[j] * (dr[j] - pdp) * s.scale;
            }
          }
        }
        sgemm(false, false, m, D, L, 1.0f, dp.data(), L, kt, ks, 1.0f, dq + t0 * qs + h * D, qs);  // dQ += dS K
        sgemm(true, false, L, D, m, 1.0f, dp.data(), L, qt, qs, 1.0f, dkl.data() + kstart * ks + kvh * D, ks);
        sgemm(true, false, L, D, m, 1.0f, p.data(), L, dot, qs, 1.0f, dvl.data() + kstart * ks + kvh * D, ks);
      }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < kv_size; ++i) {
      float a = 0, b = 0;
      for (size_t th = 0; th < dk_part.size(); ++th) {
        a += dk_part[th][i];
        b += dv_part[th][i];
      }
      dk[i] += a;
      dv[i] += b;
    }
  }
}

namespace {

// Rows [tokens, width] in reverse token order.
std::vector<float> reversed(const float* x, int64_t tokens, int64_t width) {
  std::vector<float> r(tokens * width);
  for (int64_t t = 0; t < tokens; ++t)
    std::copy(x + (tokens - 1 - t) * width, x + (tokens - t) * width, r.begin() + t * width);
  return r;
}

// out += forward(q, k, v) from a zero state, using the blocked kernel.
void lightning_forward_add(const LightningShape& s, const float* q, const float* k, const float* v,
                           int64_t tokens, float* out, bool reverse_out) {
  const int64_t width = s.heads * s.head_dim;
  std::vector<float> base(s.heads * s.head_dim * s.head_dim, 0.0f), delta(base.size(), 0.0f), o(tokens * width);
  int64_t steps = 0;
  cpu_backend().lightning_prefill(s, q, k, v, tokens, {base.data(), delta.data(), &steps}, o.data());
  for (int64_t t = 0; t < tokens; ++t) {
    const float* src = o.data() + (reverse_out ? tokens - 1 - t : t) * width;
    for (int64_t i = 0; i < width; ++i) out[t * width + i] += src[i];
  }
}

}  // namespace

void lightning(const LightningShape& s, const float* q, const float* k, const float* v,
               const float* dout, int64_t tokens, float* dq, float* dk, float* dv) {
  const int64_t width = s.heads * s.head_dim;
  // dq_t = sum_{j<=t} decay (do_t . v_j) k_j: the forward with (q, k, v) = (do, v, k).
  if (dq) lightning_forward_add(s, dout, v, k, tokens, dq, false);
  // The other two run backwards in time: reverse, run the forward, reverse back.
  const std::vector<float> rq = reversed(q, tokens, width), rk = reversed(k, tokens, width),
                           rv = reversed(v, tokens, width), rdo = reversed(dout, tokens, width);
  // dk_j = sum_{t>=j} decay (do_t . v_j) q_t: forward with (q, k, v) = (v, do, q), reversed.
  if (dk) lightning_forward_add(s, rv.data(), rdo.data(), rq.data(), tokens, dk, true);
  // dv_j = sum_{t>=j} decay (q_t . k_j) do_t: forward with (q, k, v) = (k, q, do), reversed.
  if (dv) lightning_forward_add(s, rk.data(), rq.data(), rdo.data(), tokens, dv, true);
}

void moe_route(const float* logits, const int32_t* index, const float* dweight, int64_t tokens,
               int64_t experts, int64_t top_k, float* dlogits) {
  std::vector<double> p(experts), dp(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * experts;
    const double mx = *std::max_element(l, l + experts);
    double sum = 0;
    for (int64_t e = 0; e < experts; ++e) sum += p[e] = std::exp(double(l[e]) - mx);
    for (auto& x : p) x /= sum;
    double z = 0;
    for (int64_t i = 0; i < top_k; ++i) z += p[index[t * top_k + i]];
    // w_i = p_i / z for the selected experts: dp_i = (dw_i - sum_k dw_k w_k) / z.
    double dww = 0;
    for (int64_t i = 0; i < top_k; ++i) dww += dweight[t * top_k + i] * p[index[t * top_k + i]] / z;
    std::fill(dp.begin(), dp.end(), 0.0);
    for (int64_t i = 0; i < top_k; ++i) dp[index[t * top_k + i]] = (dweight[t * top_k + i] - dww) / z;
    // Softmax: dl_j = p_j (dp_j - sum_i p_i dp_i).
    double pdp = 0;
    for (int64_t e = 0; e < experts; ++e) pdp += p[e] * dp[e];
    for (int64_t e = 0; e < experts; ++e) dlogits[t * experts + e] += static_cast<float>(p[e] * (dp[e] - pdp));
  }
}

}  // namespace interlace::kernels::backward
