// Plain reference implementations: one thread, straightforward loops, double
// accumulation. They define what every fast version must compute.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "interlace/kernels/backend.h"
#include "kv_access.h"

namespace interlace::kernels {
namespace {

class ReferenceBackend final : public Backend {
 public:
  std::string_view name() const override { return "reference"; }

  void linear(const float* x, const float* w, float* y, int64_t m, int64_t n,
              int64_t k) override {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p) acc += double(x[i * k + p]) * w[j * k + p];
        y[i * n + j] = static_cast<float>(acc);
      }
  }

  void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim,
                float eps) override {
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      double inv = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; ++i)
        y[r * dim + i] = static_cast<float>(x[r * dim + i] * inv) * weight[i];
    }
  }

  void rope(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
            int64_t rotary_dim, float theta) override {
    const int64_t half = rotary_dim / 2;
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        float* p = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          double inv_freq = std::pow(double(theta), -2.0 * i / rotary_dim);
          double angle = double(positions[t]) * inv_freq;
          double c = std::cos(angle), s = std::sin(angle);
          double a = p[i], b = p[i + half];
          p[i] = static_cast<float>(a * c - b * s);
          p[i + half] = static_cast<float>(b * c + a * s);
        }
      }
  }

  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) {
      double g = gate[i];
      out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
    }
  }

  void silu_inplace(float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) {
      double g = x[i];
      x[i] = static_cast<float>(g / (1.0 + std::exp(-g)));
    }
  }

  void sigmoid_gate(const float* gate, float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i] / (1.0 + std::exp(-double(gate[i]))));
  }

  void attention_prefill(const AttentionShape& s, const float* q, const KvView& kv,
                         int64_t q_start, int64_t tokens, float* out) override {
    for (int64_t t = 0; t < tokens; ++t) attend_one(s, q + t * s.q_heads * s.head_dim, kv, q_start + t, out + t * s.q_heads * s.head_dim);
  }

  void attention_decode(const AttentionShape& s, const float* q, std::span<const KvView> kv,
                        float* out) override {
    const int64_t row = s.q_heads * s.head_dim;
    for (size_t b = 0; b < kv.size(); ++b) attend_one(s, q + b * row, kv[b], kv[b].length - 1, out + b * row);
  }

  // Naive sum o_t = sum_{j<=t} exp(-s(t-j)) (q_t.k_j) v_j + exp(-s(t+1)) q_t S0, in double.
  void lightning_prefill(const LightningShape& s, const float* q, const float* k, const float* v,
                         int64_t tokens, const LightningState& state, float* out) override {
    const int64_t H = s.heads, D = s.head_dim;
    fold_lightning_state(s, state);
    for (int64_t h = 0; h < H; ++h) {
      const double slope = s.slopes[h];
      float* S = state.base + h * D * D;
      for (int64_t t = 0; t < tokens; ++t) {
        const float* qt = q + (t * H + h) * D;
        std::vector<double> o(D, 0.0);
        for (int64_t j = 0; j <= t; ++j) {
          const float* kj = k + (j * H + h) * D;
          const float* vj = v + (j * H + h) * D;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(qt[d]) * kj[d];
          double w = std::exp(-slope * double(t - j)) * dot;
          for (int64_t d = 0; d < D; ++d) o[d] += w * vj[d];
        }
        double init_decay = std::exp(-slope * double(t + 1));
        for (int64_t i = 0; i < D; ++i)
          for (int64_t d = 0; d < D; ++d) o[d] += init_decay * qt[i] * S[i * D + d];
        for (int64_t d = 0; d < D; ++d) out[(t * H + h) * D + d] = static_cast<float>(o[d]);
      }
      // Final state: exp(-s T) S0 + sum_j exp(-s(T-1-j)) k_j^T v_j.
      std::vector<double> Snew(D * D);
      double total_decay = std::exp(-slope * double(tokens));
      for (int64_t i = 0; i < D * D; ++i) Snew[i] = total_decay * S[i];
      for (int64_t j = 0; j < tokens; ++j) {
        double w = std::exp(-slope * double(tokens - 1 - j));
        const float* kj = k + (j * H + h) * D;
        const float* vj = v + (j * H + h) * D;
        for (int64_t i = 0; i < D; ++i)
          for (int64_t d = 0; d < D; ++d) Snew[i * D + d] += w * kj[i] * vj[d];
      }
      for (int64_t i = 0; i < D * D; ++i) S[i] = static_cast<float>(Snew[i]);
    }
  }

  // Folds, then one exact step in double; the state is left folded.
  void lightning_decode(const LightningShape& s, const float* q, const float* k, const float* v,
                        std::span<const LightningState> states, float* out) override {
    const int64_t H = s.heads, D = s.head_dim;
    for (size_t b = 0; b < states.size(); ++b) {
      fold_lightning_state(s, states[b]);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = (static_cast<int64_t>(b) * H + h) * D;
        float* S = states[b].base + h * D * D;
        const double ratio = std::exp(-double(s.slopes[h]));
        std::vector<double> o(D, 0.0);
        for (int64_t i = 0; i < D; ++i)
          for (int64_t d = 0; d < D; ++d) {
            double val = ratio * S[i * D + d] + double(k[base + i]) * v[base + d];
            S[i * D + d] = static_cast<float>(val);
            o[d] += double(q[base + i]) * val;
          }
        for (int64_t d = 0; d < D; ++d) out[base + d] = static_cast<float>(o[d]);
      }
    }
  }

  void moe_route(const float* logits, int64_t tokens, int64_t experts, int64_t top_k,
                 int32_t* index, float* weight) override {
    std::vector<double> p(experts);
    std::vector<int32_t> order(experts);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* l = logits + t * experts;
      double mx = *std::max_element(l, l + experts), sum = 0;
      for (int64_t e = 0; e < experts; ++e) sum += p[e] = std::exp(double(l[e]) - mx);
      for (int64_t e = 0; e < experts; ++e) p[e] /= sum;
      std::iota(order.begin(), order.end(), 0);
      // Highest probability first; ties go to the lower expert index (as torch.topk on CPU).
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
      double top_sum = 0;
      for (int64_t i = 0; i < top_k; ++i) top_sum += p[order[i]];
      for (int64_t i = 0; i < top_k; ++i) {
        index[t * top_k + i] = order[i];
        weight[t * top_k + i] = static_cast<float>(p[order[i]] / top_sum);
      }
    }
  }

  void log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows,
                          int64_t vocab, float* out) override {
    for (int64_t r = 0; r < rows; ++r) {
      const float* l = logits + r * vocab;
      double mx = *std::max_element(l, l + vocab), sum = 0;
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(l[i]) - mx);
      out[r] = static_cast<float>(double(l[targets[r]]) - mx - std::log(sum));
    }
  }

 private:
  static void attend_one(const AttentionShape& s, const float* q, const KvView& kv, int64_t pos,
                         float* out) {
    const int64_t D = s.head_dim, group = s.q_heads / s.kv_heads;
    const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
    std::vector<double> scores(pos + 1);
    std::vector<float> krow(D), vrow(D);
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t kvh = h / group;
      double mx = -INFINITY;
      for (int64_t j = first; j <= pos; ++j) {
        load_kv_row(s.kv_dtype, kv.k, j, s.kv_heads, kvh, D, krow.data());
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(q[h * D + d]) * krow[d];
        scores[j] = dot * s.scale;
        mx = std::max(mx, scores[j]);
      }
      double sum = 0;
      for (int64_t j = first; j <= pos; ++j) sum += scores[j] = std::exp(scores[j] - mx);
      std::vector<double> o(D, 0.0);
      for (int64_t j = first; j <= pos; ++j) {
        load_kv_row(s.kv_dtype, kv.v, j, s.kv_heads, kvh, D, vrow.data());
        for (int64_t d = 0; d < D; ++d) o[d] += scores[j] / sum * vrow[d];
      }
      for (int64_t d = 0; d < D; ++d) out[h * D + d] = static_cast<float>(o[d]);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace interlace::kernels
