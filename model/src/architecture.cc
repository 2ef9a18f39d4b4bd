#include "interlace/model/architecture.h"

#include "absl/strings/str_cat.h"

namespace interlace::model {

MoeNaming detect_moe_naming(const ModelConfig& c, const std::function<bool(const std::string&)>& has) {
  return c.is_moe() && has("model.layers.0.block_sparse_moe.gate.weight") ? MoeNaming::kPerExpert
                                                                           : MoeNaming::kPacked;
}

std::string embed_tensor_name() { return "model.embed_tokens.weight"; }
std::string final_norm_tensor_name() { return "model.norm.weight"; }
std::string lm_head_tensor_name(const ModelConfig& c) {
  return c.tie_word_embeddings ? embed_tensor_name() : "lm_head.weight";
}

LayerTensorNames layer_tensor_names(const ModelConfig& c, int64_t layer, MoeNaming naming) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  LayerTensorNames n;
  n.input_norm = p + "input_layernorm.weight";
  n.post_attention_norm = p + "post_attention_layernorm.weight";
  if (c.layer_types[layer] == LayerKind::kLinearAttention) {
    n.qkv_proj = p + "self_attn.qkv_proj.weight";
    n.output_gate = p + "self_attn.output_gate.weight";
    n.out_proj = p + "self_attn.out_proj.weight";
    n.attention_out_norm = p + "self_attn.norm.weight";
  } else {
    const std::string a = p + "self_attn.";
    n.q_proj = a + "q_proj.weight";
    n.k_proj = a + "k_proj.weight";
    n.v_proj = a + "v_proj.weight";
    n.o_proj = a + "o_proj.weight";
    if (c.attention_bias) {
      n.q_bias = a + "q_proj.bias";
      n.k_bias = a + "k_proj.bias";
      n.v_bias = a + "v_proj.bias";
      n.o_bias = a + "o_proj.bias";
    }
    if (c.qk_norm) {
      n.q_norm = a + "q_norm.weight";
      n.k_norm = a + "k_norm.weight";
    }
  }
  if (c.is_moe()) {
    if (naming == MoeNaming::kPacked) {
      n.router = p + "mlp.gate.weight";
      n.experts_gate_up = p + "mlp.experts.gate_up_proj";
      n.experts_down = p + "mlp.experts.down_proj";
    } else {
      n.router = p + "block_sparse_moe.gate.weight";
      for (int64_t e = 0; e < c.num_local_experts; ++e) {
        const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
        n.expert_gate.push_back(ep + "w1.weight");
        n.expert_up.push_back(ep + "w3.weight");
        n.expert_down.push_back(ep + "w2.weight");
      }
    }
  } else {
    n.gate_proj = p + "mlp.gate_proj.weight";
    n.up_proj = p + "mlp.up_proj.weight";
    n.down_proj = p + "mlp.down_proj.weight";
    if (c.mlp_bias) {
      n.gate_bias = p + "mlp.gate_proj.bias";
      n.up_bias = p + "mlp.up_proj.bias";
      n.down_bias = p + "mlp.down_proj.bias";
    }
  }
  return n;
}

ResidualFactors attention_residual(const ModelConfig& c, LayerKind kind) {
  if (kind == LayerKind::kLinearAttention) return {c.linear_attn_alpha_factor, c.linear_attn_beta_factor};
  return {c.full_attn_alpha_factor, c.full_attn_beta_factor};
}

ResidualFactors mlp_residual(const ModelConfig& c) { return {c.mlp_alpha_factor, c.mlp_beta_factor}; }

}  // namespace interlace::model
