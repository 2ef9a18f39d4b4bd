// Small configs of each architecture for model tests, built as config.json text
// so they go through the same parser a user's file does.
#pragma once

#include <memory>
#include <string>

#include "interlace/model/config.h"
#include "interlace/model/model.h"
#include "interlace/model/model_init.h"
#include "nlohmann/json.hpp"

namespace interlace::testing {

inline nlohmann::json llama_json() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 64}, {"hidden_size", 32},
          {"intermediate_size", 48}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
          {"attention_bias", true}, {"mlp_bias", true}, {"tie_word_embeddings", true}};
}

inline nlohmann::json qwen3_json() {
  return {{"architectures", {"Qwen3ForCausalLM"}}, {"vocab_size", 64}, {"hidden_size", 32},
          {"intermediate_size", 48}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
          {"num_key_value_heads", 1}, {"head_dim", 16}, {"rms_norm_eps", 1e-6},
          {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1000000.0}}},
          {"use_sliding_window", true}, {"sliding_window", 7}, {"max_window_layers", 1},
          {"tie_word_embeddings", false}};
}

inline nlohmann::json minimax_json() {
  return {{"architectures", {"MiniMaxForCausalLM"}}, {"vocab_size", 64}, {"hidden_size", 32},
          {"intermediate_size", 24}, {"num_hidden_layers", 4}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
          {"num_local_experts", 4}, {"num_experts_per_tok", 2}, {"block_size", 8},
          {"layer_types", {"linear_attention", "full_attention", "linear_attention", "linear_attention"}},
          {"full_attn_alpha_factor", 1.3}, {"full_attn_beta_factor", 0.7},
          {"linear_attn_alpha_factor", 0.9}, {"linear_attn_beta_factor", 1.2},
          {"mlp_alpha_factor", 1.1}, {"mlp_beta_factor", 0.8}, {"sliding_window", 20},
          {"tie_word_embeddings", false}};
}

// MiniMax with our use_qk_norm extension: per-head RMSNorm of q and k in its
// softmax layers (the main job's model has it).
inline nlohmann::json minimax_qk_norm_json() {
  nlohmann::json j = minimax_json();
  j["use_qk_norm"] = true;
  return j;
}

inline model::ModelConfig parse_or_die(const nlohmann::json& j) {
  auto c = model::parse_config(j, "test-config.json");
  if (!c.ok()) std::abort();
  return *c;
}

// A model of `json`'s config with random weights (scale 0.3) under `precision`.
inline std::shared_ptr<model::Model> random_model(const nlohmann::json& json, uint64_t seed, const std::string& precision) {
  const model::ModelConfig c = parse_or_die(json);
  auto m = model::Model::from_tensors(c, model::random_weights(c, seed, 0.3f), *model::parse_precision(precision));
  if (!m.ok()) std::abort();
  return std::shared_ptr<model::Model>(std::move(*m));
}

}  // namespace interlace::testing
