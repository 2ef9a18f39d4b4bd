// Model configuration read from a Hugging Face config.json, with exactly the
// defaults and derived values transformers uses for LlamaForCausalLM,
// Qwen3ForCausalLM and MiniMaxForCausalLM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::model {

enum class Architecture { kLlama, kQwen3, kMiniMax };
enum class LayerKind { kFullAttention, kSlidingAttention, kLinearAttention };

std::string architecture_name(Architecture a);
std::string layer_kind_name(LayerKind k);

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  int64_t rotary_dim = 0;  // dims of each head that rotate (head_dim unless partial)
  int64_t sliding_window = 0;  // for kSlidingAttention layers (and MiniMax full layers); 0 = none
  std::vector<LayerKind> layer_types;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;  // Qwen3: per-head RMSNorm of q and k before RoPE
  // MiniMax.
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t block_size = 256;
  float full_attn_alpha_factor = 1, full_attn_beta_factor = 1;
  float linear_attn_alpha_factor = 1, linear_attn_beta_factor = 1;
  float mlp_alpha_factor = 1, mlp_beta_factor = 1;
  // Special token ids (-1 when absent).
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  bool is_moe() const { return architecture == Architecture::kMiniMax; }
  int64_t window_for_layer(int64_t layer) const;
  int64_t count_layers(LayerKind kind) const;
  // Total parameter count of the weights this config describes.
  int64_t parameter_count() const;
};

// Parses a config.json document; `source` names it in error messages.
absl::StatusOr<ModelConfig> parse_config(const nlohmann::json& j, const std::string& source);
// Reads and parses DIR/config.json or a config file path.
absl::StatusOr<ModelConfig> load_config(const std::string& path);

}  // namespace interlace::model
