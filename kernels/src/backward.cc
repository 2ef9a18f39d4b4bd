#include "interlace/kernels/backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

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
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    if (dgate) dgate[i] += static_cast<float>(dout[i] * up[i] * silu_grad(g));
    if (dup) dup[i] += static_cast<float>(dout[i] * g * sigmoid(g));
  }
}

void silu(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = 0; i < n; ++i) dx[i] += static_cast<float>(dy[i] * silu_grad(x[i]));
}

void sigmoid_gate(const float* gate, const float* x, const float* dy, int64_t n, float* dgate,
                  float* dx) {
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

void attention(const AttentionShape& s, const float* q, const float* k, const float* v,
               const float* dout, int64_t tokens, float* dq, float* dk, float* dv) {
  INTERLACE_CHECK(s.kv_dtype == core::DType::kF32, "attention backward needs f32 keys and values");
  const int64_t D = s.head_dim, Hq = s.q_heads, Hk = s.kv_heads, group = Hq / Hk, T = tokens;
  // Each kv head owns its dk/dv rows, so kv heads run in parallel without races.
#pragma omp parallel for schedule(dynamic)
  for (int64_t kvh = 0; kvh < Hk; ++kvh) {
    std::vector<double> p(T), dp(T);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t h = kvh * group + g;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t first = s.window > 0 ? std::max<int64_t>(0, t - s.window + 1) : 0;
        const float* qt = q + (t * Hq + h) * D;
        const float* dot_ = dout + (t * Hq + h) * D;
        double mx = -INFINITY;
        for (int64_t j = first; j <= t; ++j) {
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += double(qt[d]) * k[(j * Hk + kvh) * D + d];
          p[j] = acc * s.scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int64_t j = first; j <= t; ++j) sum += p[j] = std::exp(p[j] - mx);
        double pdp = 0;
        for (int64_t j = first; j <= t; ++j) {
          p[j] /= sum;
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += double(dot_[d]) * v[(j * Hk + kvh) * D + d];
          dp[j] = acc;
          pdp += p[j] * acc;
        }
        for (int64_t j = first; j <= t; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * s.scale;
          const float* kj = k + (j * Hk + kvh) * D;
          float* dkj = dk + (j * Hk + kvh) * D;
          float* dvj = dv + (j * Hk + kvh) * D;
          float* dqt = dq + (t * Hq + h) * D;
          for (int64_t d = 0; d < D; ++d) {
            dqt[d] += static_cast<float>(ds * kj[d]);
            dkj[d] += static_cast<float>(ds * qt[d]);
            dvj[d] += static_cast<float>(p[j] * dot_[d]);
          }
        }
      }
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
