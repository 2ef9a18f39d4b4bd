// The learner's training forward and backward over a model's weights, held by
// their Hugging Face names (fp32 master copies). One sequence at a time: the
// forward keeps what the backward needs (O(tokens x width) per layer; lightning
// layers never hold a tokens x tokens matrix), the backward accumulates
// gradients into tensors of the same names and shapes.
//
// Status: fp32 compute only (precision profiles are not applied in training yet).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "interlace/model/config.h"
#include "interlace/model/weights.h"

namespace interlace::learner {

class TrainingModel {
 public:
  // Copies `weights` into contiguous fp32 tensors; aborts if a name or shape the
  // config needs is missing (validate with model::assemble_weights first).
  TrainingModel(model::ModelConfig config, const model::NamedTensors& weights);

  const model::ModelConfig& config() const { return config_; }
  model::NamedTensors& weights() { return weights_; }
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
    Ref mg, mu, md, mgb, mub, mdb;                   // dense MLP
    Ref router;
    std::vector<Ref> eg, eu, ed;                     // experts: gate (w1), up (w3), down (w2)
  };
  struct Cache;
  const float* w(const Ref& r) const { return r.name.empty() ? nullptr : weights_.at(r.name).f32() + r.offset; }
  static float* g(model::NamedTensors& grads, const Ref& r) {
    return r.name.empty() ? nullptr : grads.at(r.name).f32() + r.offset;
  }
  // Runs the forward, filling the cache; returns logits [T, vocab].
  std::vector<float> forward(const std::vector<int32_t>& tokens, Cache* cache) const;

  model::ModelConfig config_;
  model::NamedTensors weights_;
  std::vector<LayerRefs> layers_;
  std::vector<std::vector<float>> slopes_;
  std::string head_name_;
};

}  // namespace interlace::learner
