#include "interlace/model/config.h"

#include <filesystem>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"

namespace interlace::model {

using nlohmann::json;

std::string architecture_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama: return "LlamaForCausalLM";
    case Architecture::kQwen3: return "Qwen3ForCausalLM";
    case Architecture::kMiniMax: return "MiniMaxForCausalLM";
  }
  return "?";
}

std::string layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::kFullAttention: return "full_attention";
    case LayerKind::kSlidingAttention: return "sliding_attention";
    case LayerKind::kLinearAttention: return "linear_attention";
  }
  return "?";
}

int64_t ModelConfig::window_for_layer(int64_t layer) const {
  const LayerKind k = layer_types[layer];
  if (k == LayerKind::kSlidingAttention) return sliding_window;
  // transformers' MiniMax passes config.sliding_window to every softmax layer.
  if (k == LayerKind::kFullAttention && architecture == Architecture::kMiniMax) return sliding_window;
  return 0;
}

int64_t ModelConfig::count_layers(LayerKind kind) const {
  int64_t n = 0;
  for (LayerKind k : layer_types) n += k == kind;
  return n;
}

int64_t ModelConfig::parameter_count() const {
  const int64_t H = hidden_size, D = head_dim, Hq = num_attention_heads, Hk = num_key_value_heads;
  int64_t n = vocab_size * H + H;  // embeddings + final norm
  if (!tie_word_embeddings) n += vocab_size * H;
  for (LayerKind k : layer_types) {
    n += 2 * H;  // two norms
    if (k == LayerKind::kLinearAttention) {
      n += H * Hq * D * 3 + Hq * D * H * 2 + Hq * D;
    } else {
      n += H * Hq * D * 2 + H * Hk * D * 2;
      if (attention_bias) n += Hq * D * 2 + Hk * D * 2;
      if (qk_norm) n += 2 * D;
    }
    if (is_moe()) {
      n += num_local_experts * (H + 3 * H * intermediate_size);
    } else {
      n += 3 * H * intermediate_size;
    }
  }
  return n;
}

namespace {

// Reads optional typed fields, collecting the first error with the key name.
class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  template <typename T>
  bool get(const char* key, T& out, bool required = false) {
    if (!status_.ok()) return false;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (required) fail(key, "is required but missing");
      return false;
    }
    try {
      out = it->get<T>();
    } catch (const json::exception&) {
      fail(key, absl::StrCat("has the wrong type (got ", it->type_name(), ")"));
      return false;
    }
    return true;
  }

  void positive(const char* key, int64_t v) {
    if (status_.ok() && v <= 0) fail(key, absl::StrCat("must be positive, got ", v));
  }

  void fail(const std::string& key, const std::string& why) {
    if (status_.ok())
      status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": field '", key, "' ", why));
  }

  const absl::Status& status() const { return status_; }

 private:
  const json& j_;
  std::string source_;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<ModelConfig> parse_config(const json& j, const std::string& source) {
  if (!j.is_object()) return absl::InvalidArgumentError(source + ": config must be a JSON object");
  ModelConfig c;
  Reader r(j, source);

  std::vector<std::string> archs;
  std::string model_type;
  r.get("architectures", archs);
  r.get("model_type", model_type);
  const std::string arch = archs.empty() ? model_type : archs[0];
  if (arch == "LlamaForCausalLM" || arch == "llama") {
    c.architecture = Architecture::kLlama;
  } else if (arch == "Qwen3ForCausalLM" || arch == "qwen3") {
    c.architecture = Architecture::kQwen3;
  } else if (arch == "MiniMaxForCausalLM" || arch == "minimax") {
    c.architecture = Architecture::kMiniMax;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field 'architectures' names '", arch.empty() ? "(nothing)" : arch,
        "', which is not supported (supported: LlamaForCausalLM, Qwen3ForCausalLM, "
        "MiniMaxForCausalLM)"));
  }
  const bool minimax = c.architecture == Architecture::kMiniMax;
  const bool qwen3 = c.architecture == Architecture::kQwen3;

  r.get("vocab_size", c.vocab_size, true);
  r.get("hidden_size", c.hidden_size, true);
  r.get("intermediate_size", c.intermediate_size, true);
  r.get("num_hidden_layers", c.num_hidden_layers, true);
  r.get("num_attention_heads", c.num_attention_heads, true);
  for (auto [k, v] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_hidden_layers},
                      {"num_attention_heads", c.num_attention_heads}})
    r.positive(k, v);
  // Sizes far past any real model are refused before anything is sized from
  // them (an oversized config once aborted `model init` instead of failing).
  for (auto [k, v, most] : {std::tuple{"vocab_size", c.vocab_size, int64_t{1} << 24},
                            {"hidden_size", c.hidden_size, int64_t{1} << 17},
                            {"intermediate_size", c.intermediate_size, int64_t{1} << 20},
                            {"num_hidden_layers", c.num_hidden_layers, int64_t{1024}},
                            {"num_attention_heads", c.num_attention_heads, int64_t{1024}}})
    if (r.status().ok() && v > most) r.fail(k, absl::StrCat("is ", v, "; at most ", most, " is supported"));
  if (!r.status().ok()) return r.status();

  c.num_key_value_heads = c.num_attention_heads;
  r.get("num_key_value_heads", c.num_key_value_heads);
  r.positive("num_key_value_heads", c.num_key_value_heads);
  if (r.status().ok() && c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads", absl::StrCat("(", c.num_key_value_heads,
                                               ") must divide num_attention_heads (",
                                               c.num_attention_heads, ")"));
  c.head_dim = qwen3 ? 128 : c.hidden_size / c.num_attention_heads;
  r.get("head_dim", c.head_dim);
  r.positive("head_dim", c.head_dim);
  if (r.status().ok() && c.head_dim > 512) r.fail("head_dim", absl::StrCat("is ", c.head_dim, "; at most 512 is supported"));
  if (r.status().ok() && c.head_dim % 2 != 0) r.fail("head_dim", "must be even (RoPE rotates halves)");

  std::string act = "silu";
  r.get("hidden_act", act);
  if (r.status().ok() && act != "silu")
    r.fail("hidden_act", absl::StrCat("is '", act, "'; only 'silu' is supported"));

  c.rms_norm_eps = minimax ? 1e-5f : 1e-6f;
  r.get("rms_norm_eps", c.rms_norm_eps);

  // RoPE: top-level rope_theta (transformers < 5) or rope_parameters.rope_theta.
  c.rope_theta = minimax ? 1e6f : 10000.0f;
  r.get("rope_theta", c.rope_theta);
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    Reader rp(*it, source + " (rope_parameters)");
    rp.get("rope_theta", c.rope_theta);
    std::string type = "default";
    rp.get("rope_type", type);
    if (rp.status().ok() && type != "default")
      rp.fail("rope_type", absl::StrCat("is '", type, "'; only 'default' RoPE is supported"));
    if (!rp.status().ok()) return rp.status();
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null())
    r.fail("rope_scaling", "is set; RoPE scaling is not supported");
  c.rotary_dim = c.head_dim;
  int64_t rotary_dim = 0;
  if (r.get("rotary_dim", rotary_dim)) c.rotary_dim = rotary_dim;
  double partial = 1.0;
  if (r.get("partial_rotary_factor", partial)) c.rotary_dim = static_cast<int64_t>(c.head_dim * partial);
  if (r.status().ok() && (c.rotary_dim <= 0 || c.rotary_dim > c.head_dim || c.rotary_dim % 2))
    r.fail("rotary_dim", absl::StrCat("gives ", c.rotary_dim, " rotary dims; need an even number in (0, head_dim]"));

  r.get("tie_word_embeddings", c.tie_word_embeddings);
  r.get("attention_bias", c.attention_bias);
  r.get("mlp_bias", c.mlp_bias);
  c.qk_norm = qwen3;
  if (minimax) {
    // Not in MiniMax-Text-01's config: our extension (MiniMax-M2 has the key), a
    // per-head RMSNorm of q and k in the softmax layers as Qwen3 has. With it the
    // main job's 3:1 hybrid learnt to copy numbers in every draw of its sweep (README,
    // examples/calculator/job.yaml). M2's "per_layer" form (one norm over all heads)
    // is not built.
    r.get("use_qk_norm", c.qk_norm);
    std::string qk_norm_type = "per_head";
    r.get("qk_norm_type", qk_norm_type);
    if (r.status().ok() && c.qk_norm && qk_norm_type != "per_head")
      r.fail("qk_norm_type", absl::StrCat("is '", qk_norm_type, "'; only 'per_head' (Qwen3's form) is supported"));
  }

  int64_t eos = -1;
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) eos = it->get<int64_t>();
    else if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) eos = (*it)[0].get<int64_t>();
  }
  c.eos_token_id = eos;
  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer())
    c.bos_token_id = it->get<int64_t>();

  // Sliding window and layer types.
  int64_t window = 0;
  bool has_window = r.get("sliding_window", window);
  if (has_window && window < 0) r.fail("sliding_window", "must be positive or null");
  std::vector<std::string> types;
  bool has_types = r.get("layer_types", types);
  if (!r.status().ok()) return r.status();
  if (qwen3) {
    bool use_sliding = false;
    r.get("use_sliding_window", use_sliding);
    int64_t max_window_layers = 28;
    r.get("max_window_layers", max_window_layers);
    // transformers: sliding_window defaults to 4096; an explicit null means none.
    if (!j.contains("sliding_window") && use_sliding) window = 4096;
    if (!use_sliding) window = 0;
    if (!has_types) {
      for (int64_t i = 0; i < c.num_hidden_layers; ++i)
        types.push_back(window > 0 && i >= max_window_layers ? "sliding_attention" : "full_attention");
    }
  } else if (minimax) {
    if (!has_types) {
      // transformers' default: even layers full attention, odd layers linear.
      for (int64_t i = 0; i < c.num_hidden_layers; ++i)
        types.push_back((i + 1) % 2 ? "full_attention" : "linear_attention");
    }
  } else {
    // LlamaForCausalLM has no sliding window in transformers; layer_types, when given,
    // may still mark sliding layers.
    if (!has_types) types.assign(c.num_hidden_layers, "full_attention");
  }
  c.sliding_window = window;
  if (static_cast<int64_t>(types.size()) != c.num_hidden_layers)
    return absl::InvalidArgumentError(absl::StrCat(source, ": field 'layer_types' has ", types.size(),
                                                   " entries but num_hidden_layers is ",
                                                   c.num_hidden_layers));
  for (size_t i = 0; i < types.size(); ++i) {
    const std::string& t = types[i];
    if (t == "full_attention") c.layer_types.push_back(LayerKind::kFullAttention);
    else if (t == "sliding_attention") c.layer_types.push_back(LayerKind::kSlidingAttention);
    else if ((t == "linear_attention") && minimax) c.layer_types.push_back(LayerKind::kLinearAttention);
    else
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": field 'layer_types[", i, "]' is '", t, "'; allowed: full_attention, ",
          "sliding_attention", minimax ? ", linear_attention" : " (linear_attention needs MiniMaxForCausalLM)"));
    if (c.layer_types.back() == LayerKind::kSlidingAttention && c.sliding_window <= 0)
      return absl::InvalidArgumentError(absl::StrCat(source, ": layer ", i,
                                                     " is sliding_attention but 'sliding_window' is not set"));
  }

  if (minimax) {
    c.num_local_experts = 8;
    if (!r.get("num_local_experts", c.num_local_experts)) r.get("num_experts", c.num_local_experts);
    c.num_experts_per_tok = 2;
    r.get("num_experts_per_tok", c.num_experts_per_tok);
    r.get("block_size", c.block_size);
    r.get("full_attn_alpha_factor", c.full_attn_alpha_factor);
    r.get("full_attn_beta_factor", c.full_attn_beta_factor);
    r.get("linear_attn_alpha_factor", c.linear_attn_alpha_factor);
    r.get("linear_attn_beta_factor", c.linear_attn_beta_factor);
    r.get("mlp_alpha_factor", c.mlp_alpha_factor);
    r.get("mlp_beta_factor", c.mlp_beta_factor);
    r.positive("num_local_experts", c.num_local_experts);
    r.positive("num_experts_per_tok", c.num_experts_per_tok);
    r.positive("block_size", c.block_size);
    if (r.status().ok() && c.block_size > 4096)
      r.fail("block_size", absl::StrCat("is ", c.block_size, "; at most 4096 is supported"));
    if (r.status().ok() && c.num_local_experts > 1024)
      r.fail("num_local_experts", absl::StrCat("is ", c.num_local_experts, "; at most 1024 is supported"));
    if (r.status().ok() && c.num_experts_per_tok > c.num_local_experts)
      r.fail("num_experts_per_tok", absl::StrCat("(", c.num_experts_per_tok,
                                                 ") exceeds num_local_experts (", c.num_local_experts, ")"));
  }
  if (!r.status().ok()) return r.status();
  // With the sizes above capped this cannot overflow; 2^40 parameters is 4 TiB in fp32.
  if (c.parameter_count() > (int64_t{1} << 40))
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", c.parameter_count(),
                                                   " parameters; more than 2^40 is not supported"));
  return c;
}

absl::StatusOr<ModelConfig> load_config(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(path)) file = (std::filesystem::path(path) / "config.json").string();
  if (!std::filesystem::exists(file))
    return absl::NotFoundError(absl::StrCat(file, ": no such file (a model directory needs config.json)"));
  INTERLACE_ASSIGN_OR_RETURN(std::string text, core::read_file(file));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON"));
  return parse_config(j, file);
}

}  // namespace interlace::model
