#include "interlace/model/config.h"

#include <gtest/gtest.h>

#include "test_configs.h"

namespace interlace::model {
namespace {

std::string error_of(const nlohmann::json& j) {
  auto c = parse_config(j, "cfg.json");
  return c.ok() ? std::string("(parsed)") : std::string(c.status().message());
}

TEST(Config, ParsesEachArchitectureWithTransformersDefaults) {
  ModelConfig l = testing::parse_or_die(testing::llama_json());
  EXPECT_EQ(l.architecture, Architecture::kLlama);
  EXPECT_TRUE(l.tie_word_embeddings);
  EXPECT_EQ(l.rotary_dim, 8);
  EXPECT_FALSE(l.qk_norm);

  ModelConfig q = testing::parse_or_die(testing::qwen3_json());
  EXPECT_TRUE(q.qk_norm);
  EXPECT_FLOAT_EQ(q.rope_theta, 1e6f);  // from rope_parameters
  // use_sliding_window with max_window_layers 1: layers >= 1 slide.
  EXPECT_EQ(q.layer_types[0], LayerKind::kFullAttention);
  EXPECT_EQ(q.layer_types[1], LayerKind::kSlidingAttention);
  EXPECT_EQ(q.window_for_layer(0), 0);
  EXPECT_EQ(q.window_for_layer(2), 7);

  ModelConfig m = testing::parse_or_die(testing::minimax_json());
  EXPECT_EQ(m.count_layers(LayerKind::kLinearAttention), 3);
  EXPECT_FLOAT_EQ(m.full_attn_alpha_factor, 1.3f);
  EXPECT_EQ(m.window_for_layer(1), 20);
  EXPECT_EQ(m.block_size, 8);
  EXPECT_FALSE(m.qk_norm);  // MiniMax-Text-01 has none
  ModelConfig mq = testing::parse_or_die(testing::minimax_qk_norm_json());
  EXPECT_TRUE(mq.qk_norm);
  // Two norms of head_dim (8) in the one softmax layer.
  EXPECT_EQ(mq.parameter_count(), m.parameter_count() + 2 * 8);

  // MiniMax without layer_types: transformers alternates full (even) and linear (odd).
  auto j = testing::minimax_json();
  j.erase("layer_types");
  ModelConfig d = testing::parse_or_die(j);
  EXPECT_EQ(d.layer_types[0], LayerKind::kFullAttention);
  EXPECT_EQ(d.layer_types[1], LayerKind::kLinearAttention);
  // head_dim defaults to hidden / heads (Llama, MiniMax) and 128 (Qwen3).
  auto l2 = testing::llama_json();
  l2.erase("head_dim");
  EXPECT_EQ(testing::parse_or_die(l2).head_dim, 8);
  auto q2 = testing::qwen3_json();
  q2.erase("head_dim");
  EXPECT_EQ(testing::parse_or_die(q2).head_dim, 128);
}

TEST(Config, ErrorsNameTheFieldAndWhatIsAllowed) {
  auto j = testing::llama_json();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_NE(error_of(j).find("GPT2LMHeadModel"), std::string::npos);
  EXPECT_NE(error_of(j).find("MiniMaxForCausalLM"), std::string::npos);

  j = testing::llama_json();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("'hidden_size' is required"), std::string::npos) << error_of(j);

  j = testing::llama_json();
  j["num_hidden_layers"] = "three";
  EXPECT_NE(error_of(j).find("'num_hidden_layers' has the wrong type"), std::string::npos) << error_of(j);

  j = testing::llama_json();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("must divide num_attention_heads"), std::string::npos) << error_of(j);

  j = testing::minimax_json();
  j["layer_types"] = {"linear_attention"};
  EXPECT_NE(error_of(j).find("'layer_types' has 1 entries but num_hidden_layers is 4"), std::string::npos)
      << error_of(j);

  j = testing::llama_json();
  j["layer_types"] = {"full_attention", "linear_attention", "full_attention"};
  EXPECT_NE(error_of(j).find("layer_types[1]"), std::string::npos) << error_of(j);

  j = testing::minimax_qk_norm_json();
  j["qk_norm_type"] = "per_layer";  // MiniMax-M2's form: one norm over all heads
  EXPECT_NE(error_of(j).find("'qk_norm_type' is 'per_layer'; only 'per_head'"), std::string::npos) << error_of(j);

  j = testing::minimax_json();
  j["num_experts_per_tok"] = 9;
  EXPECT_NE(error_of(j).find("exceeds num_local_experts"), std::string::npos) << error_of(j);

  j = testing::llama_json();
  j["hidden_act"] = "gelu";
  EXPECT_NE(error_of(j).find("'hidden_act'"), std::string::npos);

  j = testing::llama_json();
  j["rope_scaling"] = {{"type", "yarn"}};
  EXPECT_NE(error_of(j).find("rope_scaling"), std::string::npos);

  j = testing::llama_json();
  j["vocab_size"] = 0;
  EXPECT_NE(error_of(j).find("'vocab_size' must be positive"), std::string::npos);

  EXPECT_NE(error_of(nlohmann::json::array()).find("JSON object"), std::string::npos);
}

// Sizes no machine could hold are refused by name before anything is sized
// from them (num_hidden_layers = 1e12 once aborted on allocation).
TEST(Config, OversizedModelsAreRefusedBeforeAllocating) {
  for (auto [key, value] : {std::pair{"num_hidden_layers", int64_t{1000000000000}},
                            {"vocab_size", int64_t{1} << 30},
                            {"hidden_size", int64_t{1} << 20},
                            {"intermediate_size", int64_t{1} << 40},
                            {"num_attention_heads", int64_t{1} << 20}}) {
    auto j = testing::llama_json();
    j[key] = value;
    EXPECT_NE(error_of(j).find(std::string("'") + key + "' is " + std::to_string(value) + "; at most"),
              std::string::npos)
        << key << ": " << error_of(j);
  }
  auto j = testing::minimax_json();
  j["num_local_experts"] = 100000;
  EXPECT_NE(error_of(j).find("'num_local_experts' is 100000; at most 1024"), std::string::npos) << error_of(j);
  // Each size allowed, together too many parameters.
  j = testing::llama_json();
  j["vocab_size"] = 1 << 24;
  j["hidden_size"] = 1 << 17;
  j["intermediate_size"] = 1 << 20;
  j["num_attention_heads"] = 1024;
  j["num_key_value_heads"] = 1024;
  j["head_dim"] = 128;
  j["num_hidden_layers"] = 1024;
  EXPECT_NE(error_of(j).find("more than 2^40 is not supported"), std::string::npos) << error_of(j);
}

TEST(Config, LoadConfigReportsMissingAndMalformedFiles) {
  auto missing = load_config("/nonexistent/dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir"), std::string::npos);
}

}  // namespace
}  // namespace interlace::model
