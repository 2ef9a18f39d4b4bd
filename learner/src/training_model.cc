#include "interlace/learner/training_model.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "interlace/core/status.h"
#include "interlace/kernels/backend.h"
#include "interlace/kernels/backward.h"
#include "interlace/model/architecture.h"

namespace interlace::learner {

using core::Tensor;
using model::LayerKind;
using model::NamedTensors;
namespace bw = kernels::backward;

namespace {


using Buf = std::vector<float>;

void linear_fwd(kernels::Backend& be, const float* x, const float* w, const float* b, int64_t m, int64_t n, int64_t k, float* y) {
  be.linear(x, w, y, m, n, k);
  if (b)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) y[i * n + j] += b[j];
}

void linear_bwd(const float* x, const float* w, const float* dy, int64_t m, int64_t n, int64_t k, float* dx,
                float* dw, float* db) {
  bw::linear(x, w, dy, m, n, k, dx, dw);
  if (db)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) db[j] += dy[i * n + j];
}

}  // namespace

struct TrainingModel::LayerCache {
  struct Expert {
    std::vector<int64_t> rows;  // token rows routed here
    std::vector<float> weight;  // their routing weights
    Buf x, g, u, act, y;        // [m, H], [m, I] x3, [m, H]
  };
  Buf x_in, h, x_mid, h2;                          // block inputs and their norms
  Buf q_raw, k_raw, q_n, k_n, q, k, v, attn;       // softmax
  Buf pre, gate_pre, a_raw, a_norm, a_gated;      // lightning (q, k, v shared above)
  Buf g, u, act;                                  // dense MLP
  Buf router;                                     // MoE
  std::vector<int32_t> index;
  std::vector<float> weight;
  std::vector<Expert> experts;
};

struct TrainingModel::Cache {
  std::vector<LayerCache> layers;
  Buf x_last, xf;
  std::vector<int64_t> positions;
};

TrainingModel::TrainingModel(model::ModelConfig config, const NamedTensors& weights, kernels::Backend* backend)
    : config_(std::move(config)), backend_(backend ? backend : &kernels::cpu_backend()) {
  const model::ModelConfig& c = config_;
  const model::MoeNaming naming =
      model::detect_moe_naming(c, [&](const std::string& name) { return weights.count(name) != 0; });
  for (const model::WeightSpec& spec : model::weight_specs(c, naming)) {
    auto it = weights.find(spec.name);
    INTERLACE_CHECK(it != weights.end() && it->second.shape() == spec.shape,
                    ("TrainingModel: missing or misshaped " + spec.name).c_str());
    weights_[spec.name] = it->second.to_f32().clone();
  }
  head_name_ = model::lm_head_tensor_name(c);
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  slopes_.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const model::LayerTensorNames n = model::layer_tensor_names(c, l, naming);
    LayerRefs L;
    L.kind = c.layer_types[l];
    L.in_norm = {n.input_norm};
    L.post_norm = {n.post_attention_norm};
    if (L.kind == LayerKind::kLinearAttention) {
      L.qkv = {n.qkv_proj};
      L.gate = {n.output_gate};
      L.out = {n.out_proj};
      L.attn_norm = {n.attention_out_norm};
      for (int64_t h = 0; h < c.num_attention_heads; ++h)
        slopes_[l].push_back(kernels::lightning_slope(h, c.num_attention_heads, l, c.num_hidden_layers));
    } else {
      L.q = {n.q_proj};
      L.k = {n.k_proj};
      L.v = {n.v_proj};
      L.o = {n.o_proj};
      L.qb = {n.q_bias};  // empty names (no bias, no norm) read as nullptr
      L.kb = {n.k_bias};
      L.vb = {n.v_bias};
      L.ob = {n.o_bias};
      L.q_norm = {n.q_norm};
      L.k_norm = {n.k_norm};
    }
    if (c.is_moe()) {
      L.router = {n.router};
      for (int64_t e = 0; e < c.num_local_experts; ++e) {
        if (naming == model::MoeNaming::kPerExpert) {
          L.expert_gate.push_back({n.expert_gate[e]});
          L.expert_up.push_back({n.expert_up[e]});
          L.expert_down.push_back({n.expert_down[e]});
        } else {  // packed: expert e's w1 and w3 are the two halves of gate_up_proj[e]
          L.expert_gate.push_back({n.experts_gate_up, e * 2 * I * H});
          L.expert_up.push_back({n.experts_gate_up, e * 2 * I * H + I * H});
          L.expert_down.push_back({n.experts_down, e * H * I});
        }
      }
    } else {
      L.mlp_gate = {n.gate_proj};
      L.mlp_up = {n.up_proj};
      L.mlp_down = {n.down_proj};
      L.mlp_gate_bias = {n.gate_bias};
      L.mlp_up_bias = {n.up_bias};
      L.mlp_down_bias = {n.down_bias};
    }
    layers_.push_back(std::move(L));
  }
}

void TrainingModel::set_precision(const model::PrecisionProfile& precision) {
  precision_ = precision;
  if (precision.strict) backend_ = &kernels::strict_backend();
  compute_stale_ = true;
}

void TrainingModel::refresh_compute() const {
  if (!compute_stale_) return;
  compute_.clear();
  if (rounded_weights())
    for (const auto& [name, t] : weights_) {
      Tensor r = t.clone();
      core::round_array(precision_.weights, r.f32(), static_cast<size_t>(r.numel()));
      compute_[name] = r;
    }
  head_compute_ = Tensor();
  if (precision_.lm_head != core::DType::kF32) {
    head_compute_ = weights_.at(head_name_).clone();
    core::round_array(precision_.lm_head, head_compute_.f32(), static_cast<size_t>(head_compute_.numel()));
  }
  compute_stale_ = false;
}

const float* TrainingModel::head() const {
  if (precision_.lm_head != core::DType::kF32) return head_compute_.f32();
  return weights_.at(head_name_).f32();  // the fp32 master, even when the rest is rounded
}

NamedTensors TrainingModel::zero_grads() const {
  NamedTensors g;
  for (auto& [name, t] : weights_) g[name] = Tensor::zeros(t.shape());
  return g;
}

void TrainingModel::linear_rounded(const float* x, const float* wt, const float* b, int64_t m, int64_t n, int64_t k,
                                   float* y) const {
  linear_fwd(be(), x, wt, b, m, n, k, y);
  core::round_array(precision_.activations, y, static_cast<size_t>(m * n));
}

std::vector<float> TrainingModel::forward(const std::vector<int32_t>& tokens, Cache* cache) const {
  const model::ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden_size, V = c.vocab_size;
  const bool minimax = c.architecture == model::Architecture::kMiniMax;
  refresh_compute();
  cache->layers.assign(c.num_hidden_layers, {});
  cache->positions.resize(T);
  for (int64_t t = 0; t < T; ++t) cache->positions[t] = t;
  Buf x(T * H);
  const float* emb = w({model::embed_tensor_name()});
  for (int64_t t = 0; t < T; ++t) {
    INTERLACE_CHECK(tokens[t] >= 0 && tokens[t] < V, "training: token id outside the vocabulary");
    std::memcpy(&x[t * H], emb + int64_t(tokens[t]) * H, H * sizeof(float));
  }
  round_act(x);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerRefs& L = layers_[l];
    LayerCache& C = cache->layers[l];
    // Attention block: x = (minimax ? h * alpha : x) + attention(h) * beta, h = norm(x).
    C.x_in = x;
    C.h.resize(T * H);
    be().rms_norm(x.data(), w(L.in_norm), C.h.data(), T, H, c.rms_norm_eps);
    round_act(C.h);
    Buf a(T * H);
    if (L.kind == LayerKind::kLinearAttention)
      lightning_layer_forward(l, C, T, a.data());
    else
      softmax_layer_forward(l, cache->positions, C, T, a.data());
    if (minimax) {
      const auto [alpha, beta] = model::attention_residual(c, L.kind);
      for (int64_t i = 0; i < T * H; ++i) x[i] = C.h[i] * alpha + a[i] * beta;
    } else {
      for (int64_t i = 0; i < T * H; ++i) x[i] += a[i];
    }
    round_act(x);
    // MLP block: the same shape around the MLP, h2 = norm(x).
    C.x_mid = x;
    C.h2.resize(T * H);
    be().rms_norm(x.data(), w(L.post_norm), C.h2.data(), T, H, c.rms_norm_eps);
    round_act(C.h2);
    Buf m(T * H, 0.0f);
    if (c.is_moe()) {
      moe_mlp_forward(L, C, T, m.data());
      const auto [alpha, beta] = model::mlp_residual(c);
      for (int64_t i = 0; i < T * H; ++i) x[i] = C.h2[i] * alpha + m[i] * beta;
    } else {
      dense_mlp_forward(L, C, T, m.data());
      for (int64_t i = 0; i < T * H; ++i) x[i] += m[i];
    }
    round_act(x);
  }
  cache->x_last = x;
  cache->xf.resize(T * H);
  be().rms_norm(x.data(), w({model::final_norm_tensor_name()}), cache->xf.data(), T, H, c.rms_norm_eps);
  round_act(cache->xf);
  core::round_array(precision_.lm_head, cache->xf.data(), cache->xf.size());
  Buf logits(T * V);
  be().linear(cache->xf.data(), head(), logits.data(), T, V, H);
  core::round_array(precision_.lm_head, logits.data(), logits.size());
  if (logit_scale_ != 1.0f)
    for (float& l : logits) l *= logit_scale_;
  return logits;
}

void TrainingModel::lightning_layer_forward(int64_t l, LayerCache& C, int64_t T, float* out) const {
  const model::ModelConfig& c = config_;
  const LayerRefs& L = layers_[l];
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, HD = Hq * D;
  C.pre.resize(T * 3 * HD);
  C.gate_pre.resize(T * HD);
  linear_rounded(C.h.data(), w(L.qkv), nullptr, T, 3 * HD, H, C.pre.data());
  linear_rounded(C.h.data(), w(L.gate), nullptr, T, HD, H, C.gate_pre.data());
  C.q.resize(T * HD);
  C.k.resize(T * HD);
  C.v.resize(T * HD);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t hh = 0; hh < Hq; ++hh)
      for (int64_t d = 0; d < D; ++d) {
        const float* src = &C.pre[(t * Hq + hh) * 3 * D];
        auto silu = [](float z) { return z / (1.0f + std::exp(-z)); };
        C.q[(t * Hq + hh) * D + d] = silu(src[d]);
        C.k[(t * Hq + hh) * D + d] = silu(src[D + d]);
        C.v[(t * Hq + hh) * D + d] = silu(src[2 * D + d]);
      }
  round_act(C.q);
  round_act(C.k);
  round_act(C.v);
  kernels::LightningShape s{.heads = Hq, .head_dim = D, .slopes = slopes_[l].data(), .block_size = c.block_size};
  Buf base(Hq * D * D, 0.0f), delta(Hq * D * D, 0.0f);
  int64_t steps = 0;
  C.a_raw.resize(T * HD);
  be().lightning_prefill(s, C.q.data(), C.k.data(), C.v.data(), T, {base.data(), delta.data(), &steps},
                         C.a_raw.data());
  round_act(C.a_raw);
  C.a_norm.resize(T * HD);
  be().rms_norm(C.a_raw.data(), w(L.attn_norm), C.a_norm.data(), T, HD, model::kLightningNormEps);
  round_act(C.a_norm);
  C.a_gated = C.a_norm;
  be().sigmoid_gate(C.gate_pre.data(), C.a_gated.data(), T * HD);
  round_act(C.a_gated);
  linear_rounded(C.a_gated.data(), w(L.out), nullptr, T, H, HD, out);
}

void TrainingModel::softmax_layer_forward(int64_t l, const std::vector<int64_t>& positions, LayerCache& C, int64_t T,
                                          float* out) const {
  const model::ModelConfig& c = config_;
  const LayerRefs& L = layers_[l];
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, Hk = c.num_key_value_heads;
  C.q_raw.resize(T * Hq * D);
  C.k_raw.resize(T * Hk * D);
  C.v.resize(T * Hk * D);
  linear_rounded(C.h.data(), w(L.q), w(L.qb), T, Hq * D, H, C.q_raw.data());
  linear_rounded(C.h.data(), w(L.k), w(L.kb), T, Hk * D, H, C.k_raw.data());
  linear_rounded(C.h.data(), w(L.v), w(L.vb), T, Hk * D, H, C.v.data());
  C.q_n = C.q_raw;
  C.k_n = C.k_raw;
  if (c.qk_norm) {
    be().rms_norm(C.q_raw.data(), w(L.q_norm), C.q_n.data(), T * Hq, D, c.rms_norm_eps);
    be().rms_norm(C.k_raw.data(), w(L.k_norm), C.k_n.data(), T * Hk, D, c.rms_norm_eps);
    round_act(C.q_n);
    round_act(C.k_n);
  }
  C.q = C.q_n;
  C.k = C.k_n;
  be().rope(C.q.data(), positions.data(), T, Hq, D, c.rotary_dim, c.rope_theta);
  be().rope(C.k.data(), positions.data(), T, Hk, D, c.rotary_dim, c.rope_theta);
  round_act(C.q);
  round_act(C.k);
  core::round_array(precision_.kv_cache, C.k.data(), C.k.size());
  core::round_array(precision_.kv_cache, C.v.data(), C.v.size());
  kernels::AttentionShape s{.q_heads = Hq, .kv_heads = Hk, .head_dim = D,
                            .scale = 1.0f / std::sqrt(static_cast<float>(D)),
                            .window = c.window_for_layer(l), .kv_dtype = core::DType::kF32};
  C.attn.resize(T * Hq * D);
  be().attention_prefill(s, C.q.data(), {C.k.data(), C.v.data(), T}, 0, T, C.attn.data());
  round_act(C.attn);
  linear_rounded(C.attn.data(), w(L.o), w(L.ob), T, H, Hq * D, out);
}

void TrainingModel::dense_mlp_forward(const LayerRefs& L, LayerCache& C, int64_t T, float* out) const {
  const int64_t H = config_.hidden_size, I = config_.intermediate_size;
  C.g.resize(T * I);
  C.u.resize(T * I);
  C.act.resize(T * I);
  linear_rounded(C.h2.data(), w(L.mlp_gate), w(L.mlp_gate_bias), T, I, H, C.g.data());
  linear_rounded(C.h2.data(), w(L.mlp_up), w(L.mlp_up_bias), T, I, H, C.u.data());
  be().silu_mul(C.g.data(), C.u.data(), C.act.data(), T * I);
  round_act(C.act);
  linear_rounded(C.act.data(), w(L.mlp_down), w(L.mlp_down_bias), T, H, I, out);
}

void TrainingModel::moe_mlp_forward(const LayerRefs& L, LayerCache& C, int64_t T, float* out) const {
  const model::ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok;
  C.router.resize(T * E);
  linear_rounded(C.h2.data(), w(L.router), nullptr, T, E, H, C.router.data());
  C.index.resize(T * K);
  C.weight.resize(T * K);
  be().moe_route(C.router.data(), T, E, K, C.index.data(), C.weight.data());
  C.experts.assign(E, {});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j) {
      C.experts[C.index[t * K + j]].rows.push_back(t);
      C.experts[C.index[t * K + j]].weight.push_back(C.weight[t * K + j]);
    }
  for (int64_t e = 0; e < E; ++e) {
    LayerCache::Expert& X = C.experts[e];
    const int64_t n = static_cast<int64_t>(X.rows.size());
    if (n == 0) continue;
    X.x.resize(n * H);
    for (int64_t i = 0; i < n; ++i) std::memcpy(&X.x[i * H], &C.h2[X.rows[i] * H], H * sizeof(float));
    X.g.resize(n * I);
    X.u.resize(n * I);
    X.act.resize(n * I);
    X.y.resize(n * H);
    linear_rounded(X.x.data(), w(L.expert_gate[e]), nullptr, n, I, H, X.g.data());
    linear_rounded(X.x.data(), w(L.expert_up[e]), nullptr, n, I, H, X.u.data());
    be().silu_mul(X.g.data(), X.u.data(), X.act.data(), n * I);
    round_act(X.act);
    linear_rounded(X.act.data(), w(L.expert_down[e]), nullptr, n, H, I, X.y.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < H; ++d) out[X.rows[i] * H + d] += X.weight[i] * X.y[i * H + d];
  }
  core::round_array(precision_.activations, out, static_cast<size_t>(T * H));
}

std::vector<float> TrainingModel::logprobs(const std::vector<int32_t>& tokens) const {
  const int64_t T = static_cast<int64_t>(tokens.size()), V = config_.vocab_size;
  std::vector<float> out(T, NAN);
  if (T < 2) return out;
  Cache cache;
  Buf logits = forward(tokens, &cache);
  be().log_softmax_gather(logits.data(), tokens.data() + 1, T - 1, V, out.data() + 1);
  return out;
}

double TrainingModel::forward_backward(const std::vector<int32_t>& tokens, const std::vector<float>& scale,
                                       NamedTensors& grads, std::vector<float>* logprobs_out) const {
  INTERLACE_CHECK(scale.size() == tokens.size(), "forward_backward: one scale per token");
  return forward_backward(
      tokens, [&scale](const std::vector<float>&) { return scale; }, grads, logprobs_out);
}

double TrainingModel::forward_backward(const std::vector<int32_t>& tokens, const ScaleFn& scale_fn,
                                       NamedTensors& grads, std::vector<float>* logprobs_out) const {
  const model::ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden_size, V = c.vocab_size;
  if (T < 2) return 0.0;
  const bool minimax = c.architecture == model::Architecture::kMiniMax;
  Cache cache;
  Buf logits = forward(tokens, &cache);

  // Loss over predictions of tokens 1..T-1 from rows 0..T-2.
  std::vector<float> lp(T, NAN);
  be().log_softmax_gather(logits.data(), tokens.data() + 1, T - 1, V, lp.data() + 1);
  const std::vector<float> scale = scale_fn(lp);
  INTERLACE_CHECK(scale.size() == tokens.size(), "forward_backward: one scale per token");
  double loss = 0;
  for (int64_t t = 1; t < T; ++t) loss -= double(scale[t]) * lp[t];
  if (logprobs_out) *logprobs_out = lp;
  Buf dlogits(T * V, 0.0f);
  std::vector<float> row_scale(T, 0.0f);
  std::vector<int32_t> targets(T, 0);
  for (int64_t t = 0; t + 1 < T; ++t) {
    row_scale[t] = scale[t + 1];
    targets[t] = tokens[t + 1];
  }
  bw::cross_entropy(logits.data(), targets.data(), row_scale.data(), T, V, dlogits.data());
  if (logit_scale_ != 1.0f)  // logits / t: the chain rule's 1 / t
    for (float& d : dlogits) d *= logit_scale_;

  // LM head and final norm.
  Buf dxf(T * H, 0.0f), dx(T * H, 0.0f);
  bw::linear(cache.xf.data(), head(), dlogits.data(), T, V, H, dxf.data(),
             grads.at(head_name_).f32());
  bw::rms_norm(cache.x_last.data(), w({model::final_norm_tensor_name()}), dxf.data(), T, H, c.rms_norm_eps,
               dx.data(), grads.at(model::final_norm_tensor_name()).f32());

  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) {
    const LayerRefs& L = layers_[l];
    LayerCache& C = cache.layers[l];
    // MLP block: x_out = (minimax ? h2 * alpha : x_mid) + mlp(h2) * beta.
    Buf dh2(T * H, 0.0f), dm(T * H), dx_mid(T * H, 0.0f);
    if (minimax) {
      const auto [alpha, beta] = model::mlp_residual(c);
      for (int64_t i = 0; i < T * H; ++i) {
        dh2[i] = dx[i] * alpha;
        dm[i] = dx[i] * beta;
      }
    } else {
      dx_mid = dx;
      dm = dx;
    }
    if (c.is_moe())
      moe_mlp_backward(L, C, T, dm.data(), dh2.data(), grads);
    else
      dense_mlp_backward(L, C, T, dm.data(), dh2.data(), grads);
    bw::rms_norm(C.x_mid.data(), w(L.post_norm), dh2.data(), T, H, c.rms_norm_eps, dx_mid.data(),
                 g(grads, L.post_norm));

    // Attention block: x_mid = (minimax ? h * alpha : x_in) + attention(h) * beta.
    Buf dh(T * H, 0.0f), da(T * H), dx_in(T * H, 0.0f);
    if (minimax) {
      const auto [alpha, beta] = model::attention_residual(c, L.kind);
      for (int64_t i = 0; i < T * H; ++i) {
        dh[i] = dx_mid[i] * alpha;
        da[i] = dx_mid[i] * beta;
      }
    } else {
      dx_in = dx_mid;
      da = dx_mid;
    }
    if (L.kind == LayerKind::kLinearAttention)
      lightning_layer_backward(l, C, T, da.data(), dh.data(), grads);
    else
      softmax_layer_backward(l, cache.positions, C, T, da.data(), dh.data(), grads);
    bw::rms_norm(C.x_in.data(), w(L.in_norm), dh.data(), T, H, c.rms_norm_eps, dx_in.data(), g(grads, L.in_norm));
    dx.swap(dx_in);
  }
  // Embedding rows.
  float* demb = grads.at(model::embed_tensor_name()).f32();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < H; ++d) demb[int64_t(tokens[t]) * H + d] += dx[t * H + d];
  return loss;
}

void TrainingModel::dense_mlp_backward(const LayerRefs& L, LayerCache& C, int64_t T, const float* dout, float* dh,
                                       NamedTensors& grads) const {
  const int64_t H = config_.hidden_size, I = config_.intermediate_size;
  Buf dact(T * I, 0.0f), dg(T * I, 0.0f), du(T * I, 0.0f);
  linear_bwd(C.act.data(), w(L.mlp_down), dout, T, H, I, dact.data(), g(grads, L.mlp_down), g(grads, L.mlp_down_bias));
  bw::silu_mul(C.g.data(), C.u.data(), dact.data(), T * I, dg.data(), du.data());
  linear_bwd(C.h2.data(), w(L.mlp_gate), dg.data(), T, I, H, dh, g(grads, L.mlp_gate), g(grads, L.mlp_gate_bias));
  linear_bwd(C.h2.data(), w(L.mlp_up), du.data(), T, I, H, dh, g(grads, L.mlp_up), g(grads, L.mlp_up_bias));
}

void TrainingModel::moe_mlp_backward(const LayerRefs& L, LayerCache& C, int64_t T, const float* dout, float* dh,
                                     NamedTensors& grads) const {
  const model::ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok;
  std::vector<float> dweight(T * K, 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    LayerCache::Expert& X = C.experts[e];
    const int64_t n = static_cast<int64_t>(X.rows.size());
    if (n == 0) continue;
    Buf dy(n * H), dact(n * I, 0.0f), dg(n * I, 0.0f), du(n * I, 0.0f), dxe(n * H, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = X.rows[i];
      double dwt = 0;
      for (int64_t d = 0; d < H; ++d) {
        dy[i * H + d] = dout[t * H + d] * X.weight[i];
        dwt += double(dout[t * H + d]) * X.y[i * H + d];
      }
      for (int64_t j = 0; j < K; ++j)
        if (C.index[t * K + j] == e) dweight[t * K + j] += static_cast<float>(dwt);
    }
    linear_bwd(X.act.data(), w(L.expert_down[e]), dy.data(), n, H, I, dact.data(), g(grads, L.expert_down[e]), nullptr);
    bw::silu_mul(X.g.data(), X.u.data(), dact.data(), n * I, dg.data(), du.data());
    linear_bwd(X.x.data(), w(L.expert_gate[e]), dg.data(), n, I, H, dxe.data(), g(grads, L.expert_gate[e]), nullptr);
    linear_bwd(X.x.data(), w(L.expert_up[e]), du.data(), n, I, H, dxe.data(), g(grads, L.expert_up[e]), nullptr);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < H; ++d) dh[X.rows[i] * H + d] += dxe[i * H + d];
  }
  Buf drouter(T * E, 0.0f);
  bw::moe_route(C.router.data(), C.index.data(), dweight.data(), T, E, K, drouter.data());
  linear_bwd(C.h2.data(), w(L.router), drouter.data(), T, E, H, dh, g(grads, L.router), nullptr);
}

void TrainingModel::lightning_layer_backward(int64_t l, LayerCache& C, int64_t T, const float* dout, float* dh,
                                             NamedTensors& grads) const {
  const model::ModelConfig& c = config_;
  const LayerRefs& L = layers_[l];
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, HD = Hq * D;
  Buf dgated(T * HD, 0.0f), dnorm(T * HD, 0.0f), dgate_pre(T * HD, 0.0f), draw(T * HD, 0.0f);
  linear_bwd(C.a_gated.data(), w(L.out), dout, T, H, HD, dgated.data(), g(grads, L.out), nullptr);
  bw::sigmoid_gate(C.gate_pre.data(), C.a_norm.data(), dgated.data(), T * HD, dgate_pre.data(), dnorm.data());
  bw::rms_norm(C.a_raw.data(), w(L.attn_norm), dnorm.data(), T, HD, model::kLightningNormEps, draw.data(),
               g(grads, L.attn_norm));
  kernels::LightningShape s{.heads = Hq, .head_dim = D, .slopes = slopes_[l].data(), .block_size = c.block_size};
  Buf dq(T * HD, 0.0f), dk(T * HD, 0.0f), dv(T * HD, 0.0f);
  bw::lightning(s, C.q.data(), C.k.data(), C.v.data(), draw.data(), T, dq.data(), dk.data(), dv.data());
  // Back through silu into the [q | k | v]-per-head projection output.
  Buf dpre(T * 3 * HD, 0.0f), dpost(T * 3 * HD);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t hh = 0; hh < Hq; ++hh)
      for (int64_t d = 0; d < D; ++d) {
        float* dst = &dpost[(t * Hq + hh) * 3 * D];
        dst[d] = dq[(t * Hq + hh) * D + d];
        dst[D + d] = dk[(t * Hq + hh) * D + d];
        dst[2 * D + d] = dv[(t * Hq + hh) * D + d];
      }
  bw::silu(C.pre.data(), dpost.data(), T * 3 * HD, dpre.data());
  linear_bwd(C.h.data(), w(L.qkv), dpre.data(), T, 3 * HD, H, dh, g(grads, L.qkv), nullptr);
  linear_bwd(C.h.data(), w(L.gate), dgate_pre.data(), T, HD, H, dh, g(grads, L.gate), nullptr);
}

void TrainingModel::softmax_layer_backward(int64_t l, const std::vector<int64_t>& positions, LayerCache& C, int64_t T,
                                           const float* dout, float* dh, NamedTensors& grads) const {
  const model::ModelConfig& c = config_;
  const LayerRefs& L = layers_[l];
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, Hk = c.num_key_value_heads;
  Buf dattn(T * Hq * D, 0.0f), dq(T * Hq * D, 0.0f), dk(T * Hk * D, 0.0f), dv(T * Hk * D, 0.0f);
  linear_bwd(C.attn.data(), w(L.o), dout, T, H, Hq * D, dattn.data(), g(grads, L.o), g(grads, L.ob));
  kernels::AttentionShape s{.q_heads = Hq, .kv_heads = Hk, .head_dim = D,
                            .scale = 1.0f / std::sqrt(static_cast<float>(D)),
                            .window = c.window_for_layer(l), .kv_dtype = core::DType::kF32};
  bw::attention(s, C.q.data(), C.k.data(), C.v.data(), dattn.data(), T, dq.data(), dk.data(), dv.data());
  bw::rope(dq.data(), positions.data(), T, Hq, D, c.rotary_dim, c.rope_theta);
  bw::rope(dk.data(), positions.data(), T, Hk, D, c.rotary_dim, c.rope_theta);
  Buf dq_raw = dq, dk_raw = dk;
  if (c.qk_norm) {
    std::fill(dq_raw.begin(), dq_raw.end(), 0.0f);
    std::fill(dk_raw.begin(), dk_raw.end(), 0.0f);
    bw::rms_norm(C.q_raw.data(), w(L.q_norm), dq.data(), T * Hq, D, c.rms_norm_eps, dq_raw.data(), g(grads, L.q_norm));
    bw::rms_norm(C.k_raw.data(), w(L.k_norm), dk.data(), T * Hk, D, c.rms_norm_eps, dk_raw.data(), g(grads, L.k_norm));
  }
  linear_bwd(C.h.data(), w(L.q), dq_raw.data(), T, Hq * D, H, dh, g(grads, L.q), g(grads, L.qb));
  linear_bwd(C.h.data(), w(L.k), dk_raw.data(), T, Hk * D, H, dh, g(grads, L.k), g(grads, L.kb));
  linear_bwd(C.h.data(), w(L.v), dv.data(), T, Hk * D, H, dh, g(grads, L.v), g(grads, L.vb));
}

}  // namespace interlace::learner
