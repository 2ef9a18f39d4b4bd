// The architecture's names and rules, in one place for both implementations
// of it: inference (Model, model.cc) and training (TrainingModel,
// learner/training_model.cc). The precision-consistency story depends on the
// two computing the same function; a name or constant defined twice could
// silently drift, so both read them here.
//
// Tensor names follow the Hugging Face checkpoints of each architecture
// exactly (LlamaForCausalLM / Qwen3ForCausalLM, MiniMaxForCausalLM).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "interlace/model/config.h"

namespace interlace::model {

// RMSNorm epsilon of a lightning layer's output norm: transformers'
// MiniMaxLightningAttention builds that norm without an eps argument, so it is
// the RMSNorm default, not the config's rms_norm_eps (the residual norms').
inline constexpr float kLightningNormEps = 1e-6f;

// How MiniMax MoE experts are named in a checkpoint.
enum class MoeNaming {
  kPacked,     // mlp.gate.weight + mlp.experts.gate_up_proj [E, 2I, H] / down_proj [E, H, I]
  kPerExpert,  // block_sparse_moe.gate.weight + block_sparse_moe.experts.{e}.w1/w2/w3.weight
};
// The naming a set of tensors uses (`has(name)`: the checkpoint holds it).
MoeNaming detect_moe_naming(const ModelConfig& config, const std::function<bool(const std::string&)>& has);

std::string embed_tensor_name();       // model.embed_tokens.weight
std::string final_norm_tensor_name();  // model.norm.weight
// lm_head.weight, or the embedding when tie_word_embeddings.
std::string lm_head_tensor_name(const ModelConfig& config);

// Every tensor name of one decoder layer; the members that do not apply to
// the layer's kind, the config's options or the MoE naming are empty.
struct LayerTensorNames {
  std::string input_norm, post_attention_norm;
  // Lightning attention.
  std::string qkv_proj, output_gate, out_proj, attention_out_norm;
  // Softmax attention (biases with attention_bias, q/k norms with qk_norm).
  std::string q_proj, k_proj, v_proj, o_proj;
  std::string q_bias, k_bias, v_bias, o_bias;
  std::string q_norm, k_norm;
  // Dense MLP (biases with mlp_bias).
  std::string gate_proj, up_proj, down_proj;
  std::string gate_bias, up_bias, down_bias;
  // MoE: the router, and the experts as named by `naming`.
  std::string router;
  std::string experts_gate_up, experts_down;                        // kPacked: [E, 2I, H] and [E, H, I]
  std::vector<std::string> expert_gate, expert_up, expert_down;     // kPerExpert: w1, w3, w2 of each expert
};
LayerTensorNames layer_tensor_names(const ModelConfig& config, int64_t layer, MoeNaming naming);

// The MiniMax residual: x = alpha * residual + beta * block output, with
// factors per layer kind and for the MLP (all 1 for Llama and Qwen3).
struct ResidualFactors {
  float alpha = 1, beta = 1;
};
ResidualFactors attention_residual(const ModelConfig& config, LayerKind kind);
ResidualFactors mlp_residual(const ModelConfig& config);

}  // namespace interlace::model
