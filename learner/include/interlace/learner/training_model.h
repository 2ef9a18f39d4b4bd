// The learner's training forward and backward over a model's weights, held by
// their Hugging Face names (fp32 master copies). One sequence at a time: the
// forward keeps what the backward needs (O(tokens x width) per layer; lightning
// layers never hold a tokens x tokens matrix), the backward accumulates
// gradients into tensors of the same names and shapes.
//
// Precision: the forward runs under a profile (fp32 by default). Weights are
// used rounded to the profile's dtypes (the LM head to its own) while the fp32
// masters are what the optimizer updates; activations are rounded where the
// rollout's Model rounds them; the backward passes gradients straight through
// the rounding. Lightning states are not rounded during training (the blocked
// form never materialises per-step states).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "interlace/kernels/backend.h"

#include "interlace/model/config.h"
#include "interlace/model/precision.h"
#include "interlace/model/weights.h"

namespace interlace::learner {

class TrainingModel {
 public:
  // Copies `weights` into contiguous fp32 tensors; aborts if a name or shape the
  // config needs is missing (validate with model::assemble_weights first).
  // `backend` runs the forward ops (the fast CPU kernels by default; the strict
  // backend makes the forward bitwise equal to the rollout's decode).
  TrainingModel(model::ModelConfig config, const model::NamedTensors& weights,
                kernels::Backend* backend = nullptr);

  const model::ModelConfig& config() const { return config_; }
  void set_precision(const model::PrecisionProfile& precision);
  const model::PrecisionProfile& precision() const { return precision_; }
  // Log-probs (and their gradients) of the distribution softmax(logits / t):
  // what a rollout sampling at temperature t draws from, so the policy gradient
  // is taken of the policy that produced the samples (as verl does). t = 1 (the
  // default) or t <= 0 (greedy, no distribution to match) leaves logits alone.
  void set_logit_temperature(float t) { logit_scale_ = t > 0 ? 1.0f / t : 1.0f; }
  // The fp32 master weights. After changing them call weights_changed(), so the
  // rounded copies a low-precision profile computes with are rebuilt.
  model::NamedTensors& weights() { return weights_; }
  void weights_changed() { compute_stale_ = true; }
  const model::NamedTensors& weights() const { return weights_; }
  // Zero tensors with the weights' names and shapes.
  model::NamedTensors zero_grads() const;

  // log p(token_i | tokens before i), entry 0 NaN.
  std::vector<float> logprobs(const std::vector<int32_t>& tokens) const;
  // Loss = sum_i scale[i] * -log p(token_i | tokens before i) (scale[0] is ignored);
  // adds d loss / d weights into `grads` and returns the loss. When `logprobs` is
  // given it receives the per-token log-probabilities of this forward.
  double forward_backward(const std::vector<int32_t>& tokens, const std::vector<float>& scale,
                          model::NamedTensors& grads, std::vector<float>* logprobs = nullptr) const;
  // The same, with the per-token scale computed from this forward's log-probs
  // (entry 0 NaN) before the backward runs: how policy-gradient objectives turn
  // ratios against the current policy into per-token coefficients in one pass.
  using ScaleFn = std::function<std::vector<float>(const std::vector<float>& logprobs)>;
  double forward_backward(const std::vector<int32_t>& tokens, const ScaleFn& scale_fn, model::NamedTensors& grads,
                          std::vector<float>* logprobs = nullptr) const;

 private:
  struct Ref {
    std::string name;  // empty: absent (e.g. no bias)
    int64_t offset = 0;
  };
  struct LayerRefs {
    model::LayerKind kind;
    Ref in_norm, post_norm;
    Ref q, k, v, o, qb, kb, vb, ob, q_norm, k_norm;  // softmax
    Ref qkv, gate, out, attn_norm;                   // lightning
    Ref mlp_gate, mlp_up, mlp_down, mlp_gate_bias, mlp_up_bias, mlp_down_bias;  // dense MLP
    Ref router;
    std::vector<Ref> expert_gate, expert_up, expert_down;  // MoE: w1, w3, w2 of each expert
  };
  struct Cache;
  struct LayerCache;  // what one layer's forward keeps for its backward
  kernels::Backend& be() const { return *backend_; }
  // The weight a forward computes with: the master, or its rounded copy.
  const float* w(const Ref& r) const {
    if (r.name.empty()) return nullptr;
    return (rounded_weights() ? compute_.at(r.name) : weights_.at(r.name)).f32() + r.offset;
  }
  const float* head() const;
  bool rounded_weights() const { return precision_.weights != core::DType::kF32; }
  void refresh_compute() const;
  void round_act(std::vector<float>& x) const { core::round_array(precision_.activations, x.data(), x.size()); }
  static float* g(model::NamedTensors& grads, const Ref& r) {
    return r.name.empty() ? nullptr : grads.at(r.name).f32() + r.offset;
  }
  // Runs the forward, filling the cache; returns logits [T, vocab].
  std::vector<float> forward(const std::vector<int32_t>& tokens, Cache* cache) const;
  // A linear whose output is rounded to the activation dtype, as the rollout's Model does.
  void linear_rounded(const float* x, const float* w, const float* b, int64_t m, int64_t n, int64_t k, float* y) const;

  // One layer's sublayers, mirroring Model's softmax_layer / lightning_layer /
  // dense_mlp / moe_mlp. Forward: read the normed input (C.h for attention,
  // C.h2 for the MLP), keep what the backward needs in C, write the sublayer's
  // output [T, hidden]. Backward: from d(output), add d(normed input) into
  // `dh` and the weights' gradients into `grads`. The residual rules around
  // them (model/architecture.h) are applied by forward / forward_backward.
  void softmax_layer_forward(int64_t l, const std::vector<int64_t>& positions, LayerCache& C, int64_t T,
                             float* out) const;
  void softmax_layer_backward(int64_t l, const std::vector<int64_t>& positions, LayerCache& C, int64_t T,
                              const float* dout, float* dh, model::NamedTensors& grads) const;
  void lightning_layer_forward(int64_t l, LayerCache& C, int64_t T, float* out) const;
  void lightning_layer_backward(int64_t l, LayerCache& C, int64_t T, const float* dout, float* dh,
                                model::NamedTensors& grads) const;
  void dense_mlp_forward(const LayerRefs& L, LayerCache& C, int64_t T, float* out) const;
  void dense_mlp_backward(const LayerRefs& L, LayerCache& C, int64_t T, const float* dout, float* dh,
                          model::NamedTensors& grads) const;
  void moe_mlp_forward(const LayerRefs& L, LayerCache& C, int64_t T, float* out) const;
  void moe_mlp_backward(const LayerRefs& L, LayerCache& C, int64_t T, const float* dout, float* dh,
                        model::NamedTensors& grads) const;

  model::ModelConfig config_;
  kernels::Backend* backend_;
  model::NamedTensors weights_;
  model::PrecisionProfile precision_;
  float logit_scale_ = 1.0f;  // 1 / temperature
  mutable model::NamedTensors compute_;  // rounded copies, when the profile rounds weights
  mutable core::Tensor head_compute_;     // the LM head rounded to its dtype
  mutable bool compute_stale_ = true;
  std::vector<LayerRefs> layers_;
  std::vector<std::vector<float>> slopes_;
  std::string head_name_;
};

}  // namespace interlace::learner
