#include "reference_model.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace interlace::testing {
namespace {

using model::Architecture;
using model::LayerKind;
using model::ModelConfig;
using model::NamedTensors;
using Mat = std::vector<std::vector<double>>;  // [rows][cols]

struct W {
  const NamedTensors& t;
  const float* get(const std::string& name) const {
    auto it = t.find(name);
    if (it == t.end()) return nullptr;
    return it->second.f32();
  }
  bool has(const std::string& name) const { return t.count(name) != 0; }
};

// y = x W^T (+ b), W [out, in] row-major.
Mat linear(const Mat& x, const float* w, int64_t out, int64_t in, const float* b = nullptr) {
  Mat y(x.size(), std::vector<double>(out));
  for (size_t r = 0; r < x.size(); ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += x[r][i] * w[o * in + i];
      y[r][o] = acc;
    }
  return y;
}

std::vector<double> rmsnorm(const std::vector<double>& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

Mat rmsnorm_rows(const Mat& x, const float* w, double eps) {
  Mat y;
  for (auto& r : x) y.push_back(rmsnorm(r, w, eps));
  return y;
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// RoPE, rotate-half, on one head vector at position pos.
void rope(double* x, int64_t head_dim, int64_t rotary_dim, double theta, int64_t pos) {
  const int64_t half = rotary_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(theta, double(2 * i) / double(rotary_dim));
    const double c = std::cos(pos * inv_freq), s = std::sin(pos * inv_freq);
    const double a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
  (void)head_dim;
}

Mat softmax_attention(const ModelConfig& c, const W& w, const std::string& p, const Mat& h, int64_t layer) {
  const int64_t T = h.size(), Hd = c.hidden_size, Hq = c.num_attention_heads, Hk = c.num_key_value_heads,
                D = c.head_dim;
  auto bias = [&](const std::string& n) { return c.attention_bias ? w.get(p + n + ".bias") : nullptr; };
  Mat q = linear(h, w.get(p + "q_proj.weight"), Hq * D, Hd, bias("q_proj"));
  Mat k = linear(h, w.get(p + "k_proj.weight"), Hk * D, Hd, bias("k_proj"));
  Mat v = linear(h, w.get(p + "v_proj.weight"), Hk * D, Hd, bias("v_proj"));
  for (int64_t t = 0; t < T; ++t) {
    if (c.qk_norm) {
      for (int64_t hh = 0; hh < Hq; ++hh) {
        std::vector<double> part(q[t].begin() + hh * D, q[t].begin() + (hh + 1) * D);
        part = rmsnorm(part, w.get(p + "q_norm.weight"), c.rms_norm_eps);
        std::copy(part.begin(), part.end(), q[t].begin() + hh * D);
      }
      for (int64_t hh = 0; hh < Hk; ++hh) {
        std::vector<double> part(k[t].begin() + hh * D, k[t].begin() + (hh + 1) * D);
        part = rmsnorm(part, w.get(p + "k_norm.weight"), c.rms_norm_eps);
        std::copy(part.begin(), part.end(), k[t].begin() + hh * D);
      }
    }
    for (int64_t hh = 0; hh < Hq; ++hh) rope(&q[t][hh * D], D, c.rotary_dim, c.rope_theta, t);
    for (int64_t hh = 0; hh < Hk; ++hh) rope(&k[t][hh * D], D, c.rotary_dim, c.rope_theta, t);
  }
  // Which layers get a window follows the transformers configs.
  int64_t window = 0;
  if (c.layer_types[layer] == LayerKind::kSlidingAttention) window = c.sliding_window;
  if (c.architecture == Architecture::kMiniMax) window = c.sliding_window;
  Mat out(T, std::vector<double>(Hq * D, 0.0));
  const double scale = 1.0 / std::sqrt(double(D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t hh = 0; hh < Hq; ++hh) {
      const int64_t kh = hh / (Hq / Hk);  // repeat_kv
      std::vector<double> s(T, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j <= t; ++j) {
        if (window > 0 && !(j > t - window)) continue;  // masking_utils: kv_idx > q_idx - window
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[t][hh * D + d] * k[j][kh * D + d];
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= t; ++j) sum += (s[j] = std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx));
      for (int64_t j = 0; j <= t; ++j)
        for (int64_t d = 0; d < D; ++d) out[t][hh * D + d] += s[j] / sum * v[j][kh * D + d];
    }
  return linear(out, w.get(p + "o_proj.weight"), Hd, Hq * D, bias("o_proj"));
}

Mat lightning_attention(const ModelConfig& c, const W& w, const std::string& p, const Mat& h, int64_t layer) {
  const int64_t T = h.size(), Hd = c.hidden_size, Hn = c.num_attention_heads, D = c.head_dim;
  const int64_t L = c.num_hidden_layers;
  Mat qkv = linear(h, w.get(p + "qkv_proj.weight"), 3 * Hn * D, Hd);
  for (auto& r : qkv)
    for (double& x : r) x = silu(x);
  Mat out(T, std::vector<double>(Hn * D, 0.0));
  for (int64_t hh = 0; hh < Hn; ++hh) {
    // slope = (1 / 2^(8/H))^(h+1) * (1 - layer/(L-1+1e-5) + 1e-5)
    const double slope = std::pow(1.0 / std::pow(2.0, 8.0 / Hn), hh + 1) *
                         (1.0 - double(layer) / (double(L) - 1.0 + 1e-5) + 1e-5);
    const double s = double(float(slope));  // the slope the model holds, as a float
    for (int64_t t = 0; t < T; ++t) {
      const double* q = &qkv[t][hh * 3 * D];
      for (int64_t j = 0; j <= t; ++j) {
        const double* k = &qkv[j][hh * 3 * D + D];
        const double* v = &qkv[j][hh * 3 * D + 2 * D];
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[d] * k[d];
        const double wgt = std::exp(-s * double(t - j)) * dot;
        for (int64_t d = 0; d < D; ++d) out[t][hh * D + d] += wgt * v[d];
      }
    }
  }
  out = rmsnorm_rows(out, w.get(p + "norm.weight"), 1e-6);
  Mat gate = linear(h, w.get(p + "output_gate.weight"), Hn * D, Hd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < Hn * D; ++i) out[t][i] *= sigmoid(gate[t][i]);
  return linear(out, w.get(p + "out_proj.weight"), Hd, Hn * D);
}

Mat dense_mlp(const ModelConfig& c, const W& w, const std::string& p, const Mat& h) {
  const int64_t Hd = c.hidden_size, I = c.intermediate_size;
  auto b = [&](const std::string& n) { return c.mlp_bias ? w.get(p + n + ".bias") : nullptr; };
  Mat g = linear(h, w.get(p + "gate_proj.weight"), I, Hd, b("gate_proj"));
  Mat u = linear(h, w.get(p + "up_proj.weight"), I, Hd, b("up_proj"));
  for (size_t t = 0; t < g.size(); ++t)
    for (int64_t i = 0; i < I; ++i) g[t][i] = silu(g[t][i]) * u[t][i];
  return linear(g, w.get(p + "down_proj.weight"), Hd, I, b("down_proj"));
}

Mat moe(const ModelConfig& c, const W& w, const std::string& layer_prefix, const Mat& h) {
  const int64_t Hd = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok;
  const bool packed = w.has(layer_prefix + "mlp.gate.weight");
  const std::string p = layer_prefix + (packed ? "mlp." : "block_sparse_moe.");
  Mat logits = linear(h, w.get(p + "gate.weight"), E, Hd);
  Mat out(h.size(), std::vector<double>(Hd, 0.0));
  for (size_t t = 0; t < h.size(); ++t) {
    std::vector<double> prob(E);
    double mx = *std::max_element(logits[t].begin(), logits[t].end()), sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += prob[e] = std::exp(logits[t][e] - mx);
    for (auto& x : prob) x /= sum;
    std::vector<int> order(E);
    for (int e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b]; });
    double top = 0;
    for (int64_t i = 0; i < K; ++i) top += prob[order[i]];
    for (int64_t i = 0; i < K; ++i) {
      const int e = order[i];
      const double wt = prob[e] / top;
      const float *w1, *w3, *w2;
      if (packed) {
        const float* gu = w.get(p + "experts.gate_up_proj") + int64_t(e) * 2 * I * Hd;
        w1 = gu;            // first half: gate
        w3 = gu + I * Hd;   // second half: up
        w2 = w.get(p + "experts.down_proj") + int64_t(e) * Hd * I;
      } else {
        const std::string ep = absl::StrCat(p, "experts.", e, ".");
        w1 = w.get(ep + "w1.weight");
        w3 = w.get(ep + "w3.weight");
        w2 = w.get(ep + "w2.weight");
      }
      Mat x1 = {h[t]};
      Mat g = linear(x1, w1, I, Hd), u = linear(x1, w3, I, Hd);
      for (int64_t j = 0; j < I; ++j) g[0][j] = silu(g[0][j]) * u[0][j];
      Mat y = linear(g, w2, Hd, I);
      for (int64_t d = 0; d < Hd; ++d) out[t][d] += wt * y[0][d];
    }
  }
  return out;
}

}  // namespace

std::vector<double> reference_logprobs(const ModelConfig& c, const NamedTensors& tensors,
                                       const std::vector<int32_t>& tokens, double temperature) {
  W w{tensors};
  const int64_t T = tokens.size(), Hd = c.hidden_size, V = c.vocab_size;
  Mat x(T, std::vector<double>(Hd));
  const float* emb = w.get("model.embed_tokens.weight");
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < Hd; ++d) x[t][d] = emb[int64_t(tokens[t]) * Hd + d];
  const bool minimax = c.architecture == Architecture::kMiniMax;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    const bool linear_layer = c.layer_types[layer] == LayerKind::kLinearAttention;
    Mat h = rmsnorm_rows(x, w.get(p + "input_layernorm.weight"), c.rms_norm_eps);
    Mat a = linear_layer ? lightning_attention(c, w, p + "self_attn.", h, layer)
                         : softmax_attention(c, w, p + "self_attn.", h, layer);
    if (minimax) {
      const double alpha = linear_layer ? c.linear_attn_alpha_factor : c.full_attn_alpha_factor;
      const double beta = linear_layer ? c.linear_attn_beta_factor : c.full_attn_beta_factor;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < Hd; ++d) x[t][d] = h[t][d] * alpha + a[t][d] * beta;  // residual = normed input
    } else {
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < Hd; ++d) x[t][d] += a[t][d];
    }
    h = rmsnorm_rows(x, w.get(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    Mat m = minimax ? moe(c, w, p, h) : dense_mlp(c, w, p + "mlp.", h);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Hd; ++d)
        x[t][d] = minimax ? h[t][d] * c.mlp_alpha_factor + m[t][d] * c.mlp_beta_factor : x[t][d] + m[t][d];
  }
  x = rmsnorm_rows(x, w.get("model.norm.weight"), c.rms_norm_eps);
  const float* head = w.get(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  Mat logits = linear(x, head, V, Hd);
  std::vector<double> out(T, NAN);
  for (int64_t t = 1; t < T; ++t) {
    std::vector<double> l = logits[t - 1];
    for (double& v : l) v /= temperature;
    double mx = *std::max_element(l.begin(), l.end()), sum = 0;
    for (double v : l) sum += std::exp(v - mx);
    out[t] = l[tokens[t]] - mx - std::log(sum);
  }
  return out;
}

}  // namespace interlace::testing
