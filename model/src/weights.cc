#include "interlace/model/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "interlace/core/status.h"
#include "spdlog/spdlog.h"

namespace interlace::model {

using core::Shape;
using core::Tensor;

namespace {

std::string layer_prefix(int64_t i) { return absl::StrCat("model.layers.", i, "."); }

bool has_moe_packed(const NamedTensors& t, int64_t layer) {
  return t.count(layer_prefix(layer) + "mlp.gate.weight") != 0;
}

// Stacks the rows of several Linears into one (weights and, if all have them, biases)
// and points each part at its rows of the stacked tensors.
Linear fuse(std::vector<Linear*> parts) {
  int64_t rows = 0;
  const int64_t in = parts[0]->in_features();
  bool bias = true;
  for (Linear* p : parts) {
    rows += p->out_features();
    bias = bias && p->bias.defined();
  }
  Linear f;
  f.weight = Tensor::zeros({rows, in});
  if (bias) f.bias = Tensor::zeros({rows});
  int64_t r = 0;
  for (Linear* p : parts) {
    const int64_t n = p->out_features();
    std::memcpy(f.weight.f32() + r * in, p->weight.f32(), n * in * sizeof(float));
    p->weight = f.weight.slice_rows(r, r + n);
    if (bias) {
      std::memcpy(f.bias.f32() + r, p->bias.f32(), n * sizeof(float));
      p->bias = f.bias.slice_rows(r, r + n);
    }
    r += n;
  }
  return f;
}

}  // namespace

std::vector<WeightSpec> weight_specs(const ModelConfig& c, MoeNaming naming) {
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads,
                Hk = c.num_key_value_heads, I = c.intermediate_size;
  std::vector<WeightSpec> s;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = layer_prefix(i);
    s.push_back({p + "input_layernorm.weight", {H}, true});
    s.push_back({p + "post_attention_layernorm.weight", {H}, true});
    if (c.layer_types[i] == LayerKind::kLinearAttention) {
      s.push_back({p + "self_attn.qkv_proj.weight", {3 * Hq * D, H}});
      s.push_back({p + "self_attn.output_gate.weight", {Hq * D, H}});
      s.push_back({p + "self_attn.out_proj.weight", {H, Hq * D}});
      s.push_back({p + "self_attn.norm.weight", {Hq * D}, true});
    } else {
      s.push_back({p + "self_attn.q_proj.weight", {Hq * D, H}});
      s.push_back({p + "self_attn.k_proj.weight", {Hk * D, H}});
      s.push_back({p + "self_attn.v_proj.weight", {Hk * D, H}});
      s.push_back({p + "self_attn.o_proj.weight", {H, Hq * D}});
      if (c.attention_bias) {
        s.push_back({p + "self_attn.q_proj.bias", {Hq * D}});
        s.push_back({p + "self_attn.k_proj.bias", {Hk * D}});
        s.push_back({p + "self_attn.v_proj.bias", {Hk * D}});
        s.push_back({p + "self_attn.o_proj.bias", {H}});
      }
      if (c.qk_norm) {
        s.push_back({p + "self_attn.q_norm.weight", {D}, true});
        s.push_back({p + "self_attn.k_norm.weight", {D}, true});
      }
    }
    if (c.is_moe()) {
      const int64_t E = c.num_local_experts;
      if (naming == MoeNaming::kPacked) {
        s.push_back({p + "mlp.gate.weight", {E, H}});
        s.push_back({p + "mlp.experts.gate_up_proj", {E, 2 * I, H}});
        s.push_back({p + "mlp.experts.down_proj", {E, H, I}});
      } else {
        s.push_back({p + "block_sparse_moe.gate.weight", {E, H}});
        for (int64_t e = 0; e < E; ++e) {
          const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
          s.push_back({ep + "w1.weight", {I, H}});
          s.push_back({ep + "w2.weight", {H, I}});
          s.push_back({ep + "w3.weight", {I, H}});
        }
      }
    } else {
      s.push_back({p + "mlp.gate_proj.weight", {I, H}});
      s.push_back({p + "mlp.up_proj.weight", {I, H}});
      s.push_back({p + "mlp.down_proj.weight", {H, I}});
      if (c.mlp_bias) {
        s.push_back({p + "mlp.gate_proj.bias", {I}});
        s.push_back({p + "mlp.up_proj.bias", {I}});
        s.push_back({p + "mlp.down_proj.bias", {H}});
      }
    }
  }
  s.push_back({"model.norm.weight", {H}, true});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, H}});
  return s;
}

absl::StatusOr<ModelWeights> load_weights(const ModelConfig& config, const Checkpoint& checkpoint,
                                          const PrecisionProfile& precision) {
  // Detect the MoE naming from layer 0.
  MoeNaming naming = MoeNaming::kPacked;
  if (config.is_moe() && checkpoint.contains("model.layers.0.block_sparse_moe.gate.weight"))
    naming = MoeNaming::kPerExpert;
  NamedTensors tensors;
  for (const WeightSpec& spec : weight_specs(config, naming)) {
    if (!checkpoint.contains(spec.name)) {
      std::string hint;
      if (spec.name == "lm_head.weight") hint = " (or set tie_word_embeddings: true in config.json)";
      return absl::NotFoundError(absl::StrCat("checkpoint is missing tensor '", spec.name, "' with shape ",
                                              core::shape_string(spec.shape), hint));
    }
    const TensorInfo& info = checkpoint.info(spec.name);
    if (info.shape != spec.shape)
      return absl::InvalidArgumentError(absl::StrCat(checkpoint.file_of(spec.name), ": tensor '", spec.name,
                                                     "' has shape ", core::shape_string(info.shape),
                                                     " but the config needs ", core::shape_string(spec.shape)));
    INTERLACE_ASSIGN_OR_RETURN(Tensor t, checkpoint.get(spec.name));
    tensors[spec.name] = t.to_f32();
  }
  // Names we do not use: transformers' non-persistent buffers are expected; anything
  // else is reported so a naming mismatch does not go unnoticed.
  std::vector<std::string> unused;
  for (const std::string& name : checkpoint.names()) {
    if (tensors.count(name)) continue;
    if (name.find("rotary_emb.inv_freq") != std::string::npos || name.find("slope_rate") != std::string::npos ||
        name.find("_decay") != std::string::npos)
      continue;
    unused.push_back(name);
  }
  if (!unused.empty()) {
    if (unused.size() > 5) unused.resize(5);
    spdlog::warn("checkpoint has tensors this model does not use, e.g. {}", absl::StrJoin(unused, ", "));
  }
  return assemble_weights(config, tensors, precision);
}

absl::StatusOr<ModelWeights> assemble_weights(const ModelConfig& c, const NamedTensors& t,
                                              const PrecisionProfile& precision) {
  const MoeNaming naming = c.is_moe() && t.count("model.layers.0.block_sparse_moe.gate.weight")
                               ? MoeNaming::kPerExpert
                               : MoeNaming::kPacked;
  for (const WeightSpec& spec : weight_specs(c, naming)) {
    auto it = t.find(spec.name);
    if (it == t.end()) return absl::NotFoundError(absl::StrCat("missing tensor '", spec.name, "'"));
    if (it->second.shape() != spec.shape)
      return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' has shape ",
                                                     core::shape_string(it->second.shape()), " but the config needs ",
                                                     core::shape_string(spec.shape)));
  }
  // Returns an f32 copy rounded to `dtype` (or the tensor itself when f32 and unrounded).
  auto take = [&](const std::string& name, core::DType dtype) -> absl::StatusOr<Tensor> {
    auto it = t.find(name);
    if (it == t.end()) return absl::NotFoundError(absl::StrCat("missing tensor '", name, "'"));
    Tensor f = it->second.to_f32();
    if (dtype == core::DType::kF32) return f;
    Tensor r = f.clone();
    core::round_array(dtype, r.f32(), static_cast<size_t>(r.numel()));
    return r;
  };
  const core::DType wd = precision.weights;
  auto linear = [&](const std::string& base, bool bias) -> absl::StatusOr<Linear> {
    Linear l;
    INTERLACE_ASSIGN_OR_RETURN(l.weight, take(base + ".weight", wd));
    if (bias) {
      INTERLACE_ASSIGN_OR_RETURN(l.bias, take(base + ".bias", wd));
    }
    return l;
  };
  ModelWeights w;
  INTERLACE_ASSIGN_OR_RETURN(w.embed, take("model.embed_tokens.weight", wd));
  INTERLACE_ASSIGN_OR_RETURN(w.final_norm, take("model.norm.weight", wd));
  INTERLACE_ASSIGN_OR_RETURN(
      w.lm_head, take(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", precision.lm_head));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = layer_prefix(i);
    LayerWeights L;
    L.kind = c.layer_types[i];
    INTERLACE_ASSIGN_OR_RETURN(L.input_norm, take(p + "input_layernorm.weight", wd));
    INTERLACE_ASSIGN_OR_RETURN(L.post_norm, take(p + "post_attention_layernorm.weight", wd));
    if (L.kind == LayerKind::kLinearAttention) {
      INTERLACE_ASSIGN_OR_RETURN(L.qkv, linear(p + "self_attn.qkv_proj", false));
      INTERLACE_ASSIGN_OR_RETURN(L.gate, linear(p + "self_attn.output_gate", false));
      INTERLACE_ASSIGN_OR_RETURN(L.out, linear(p + "self_attn.out_proj", false));
      INTERLACE_ASSIGN_OR_RETURN(L.attn_norm, take(p + "self_attn.norm.weight", wd));
      L.attn_in = fuse({&L.qkv, &L.gate});
    } else {
      INTERLACE_ASSIGN_OR_RETURN(L.q, linear(p + "self_attn.q_proj", c.attention_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.k, linear(p + "self_attn.k_proj", c.attention_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.v, linear(p + "self_attn.v_proj", c.attention_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.o, linear(p + "self_attn.o_proj", c.attention_bias));
      if (c.qk_norm) {
        INTERLACE_ASSIGN_OR_RETURN(L.q_norm, take(p + "self_attn.q_norm.weight", wd));
        INTERLACE_ASSIGN_OR_RETURN(L.k_norm, take(p + "self_attn.k_norm.weight", wd));
      }
      L.attn_in = fuse({&L.q, &L.k, &L.v});
    }
    if (c.is_moe()) {
      const int64_t E = c.num_local_experts, I = c.intermediate_size;
      if (has_moe_packed(t, i)) {
        INTERLACE_ASSIGN_OR_RETURN(L.router, linear(p + "mlp.gate", false));
        INTERLACE_ASSIGN_OR_RETURN(Tensor gate_up, take(p + "mlp.experts.gate_up_proj", wd));
        INTERLACE_ASSIGN_OR_RETURN(Tensor down, take(p + "mlp.experts.down_proj", wd));
        for (int64_t e = 0; e < E; ++e) {
          // gate_up_proj[e] is [2I, H]: the first I rows are the gate (w1), the rest up (w3).
          Tensor gu = gate_up.slice_rows(e, e + 1).reshape({2 * I, c.hidden_size});
          L.expert_in.push_back({gu, {}});  // already stacked [gate; up]
          L.expert_gate.push_back({gu.slice_rows(0, I), {}});
          L.expert_up.push_back({gu.slice_rows(I, 2 * I), {}});
          L.expert_down.push_back({down.slice_rows(e, e + 1).reshape({c.hidden_size, I}), {}});
        }
      } else {
        INTERLACE_ASSIGN_OR_RETURN(L.router, linear(p + "block_sparse_moe.gate", false));
        for (int64_t e = 0; e < E; ++e) {
          const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
          INTERLACE_ASSIGN_OR_RETURN(Linear w1, linear(ep + "w1", false));
          INTERLACE_ASSIGN_OR_RETURN(Linear w2, linear(ep + "w2", false));
          INTERLACE_ASSIGN_OR_RETURN(Linear w3, linear(ep + "w3", false));
          L.expert_in.push_back(fuse({&w1, &w3}));
          L.expert_gate.push_back(w1);
          L.expert_up.push_back(w3);
          L.expert_down.push_back(w2);
        }
      }
    } else {
      INTERLACE_ASSIGN_OR_RETURN(L.mlp_gate, linear(p + "mlp.gate_proj", c.mlp_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.mlp_up, linear(p + "mlp.up_proj", c.mlp_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.mlp_down, linear(p + "mlp.down_proj", c.mlp_bias));
      L.mlp_in = fuse({&L.mlp_gate, &L.mlp_up});
    }
    w.layers.push_back(std::move(L));
  }
  return w;
}

NamedTensors random_weights(const ModelConfig& config, uint64_t seed, float stddev, MoeNaming naming) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  NamedTensors out;
  for (const WeightSpec& spec : weight_specs(config, naming)) {
    Tensor t = Tensor::zeros(spec.shape);
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = spec.is_norm ? 1.0f : dist(rng);
    out[spec.name] = t;
  }
  return out;
}

}  // namespace interlace::model
