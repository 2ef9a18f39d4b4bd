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
  s.push_back({embed_tensor_name(), {c.vocab_size, H}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensorNames n = layer_tensor_names(c, i, naming);
    s.push_back({n.input_norm, {H}, true});
    s.push_back({n.post_attention_norm, {H}, true});
    if (c.layer_types[i] == LayerKind::kLinearAttention) {
      s.push_back({n.qkv_proj, {3 * Hq * D, H}});
      s.push_back({n.output_gate, {Hq * D, H}});
      s.push_back({n.out_proj, {H, Hq * D}});
      s.push_back({n.attention_out_norm, {Hq * D}, true});
    } else {
      s.push_back({n.q_proj, {Hq * D, H}});
      s.push_back({n.k_proj, {Hk * D, H}});
      s.push_back({n.v_proj, {Hk * D, H}});
      s.push_back({n.o_proj, {H, Hq * D}});
      if (c.attention_bias) {
        s.push_back({n.q_bias, {Hq * D}});
        s.push_back({n.k_bias, {Hk * D}});
        s.push_back({n.v_bias, {Hk * D}});
        s.push_back({n.o_bias, {H}});
      }
      if (c.qk_norm) {
        s.push_back({n.q_norm, {D}, true});
        s.push_back({n.k_norm, {D}, true});
      }
    }
    if (c.is_moe()) {
      const int64_t E = c.num_local_experts;
      s.push_back({n.router, {E, H}});
      if (naming == MoeNaming::kPacked) {
        s.push_back({n.experts_gate_up, {E, 2 * I, H}});
        s.push_back({n.experts_down, {E, H, I}});
      } else {
        for (int64_t e = 0; e < E; ++e) {
          s.push_back({n.expert_gate[e], {I, H}});
          s.push_back({n.expert_down[e], {H, I}});
          s.push_back({n.expert_up[e], {I, H}});
        }
      }
    } else {
      s.push_back({n.gate_proj, {I, H}});
      s.push_back({n.up_proj, {I, H}});
      s.push_back({n.down_proj, {H, I}});
      if (c.mlp_bias) {
        s.push_back({n.gate_bias, {I}});
        s.push_back({n.up_bias, {I}});
        s.push_back({n.down_bias, {H}});
      }
    }
  }
  s.push_back({final_norm_tensor_name(), {H}, true});
  if (!c.tie_word_embeddings) s.push_back({lm_head_tensor_name(c), {c.vocab_size, H}});
  return s;
}

absl::StatusOr<ModelWeights> load_weights(const ModelConfig& config, const Checkpoint& checkpoint,
                                          const PrecisionProfile& precision) {
  const MoeNaming naming =
      detect_moe_naming(config, [&](const std::string& name) { return checkpoint.contains(name); });
  NamedTensors tensors;
  for (const WeightSpec& spec : weight_specs(config, naming)) {
    if (!checkpoint.contains(spec.name)) {
      std::string hint;
      if (spec.name == "lm_head.weight" && !config.tie_word_embeddings) hint = " (or set tie_word_embeddings: true in config.json)";
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
  const MoeNaming naming = detect_moe_naming(c, [&](const std::string& name) { return t.count(name) != 0; });
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
  // A Linear from its weight's name and its bias's (none if empty).
  auto linear = [&](const std::string& weight, const std::string& bias = "") -> absl::StatusOr<Linear> {
    Linear l;
    INTERLACE_ASSIGN_OR_RETURN(l.weight, take(weight, wd));
    if (!bias.empty()) {
      INTERLACE_ASSIGN_OR_RETURN(l.bias, take(bias, wd));
    }
    return l;
  };
  ModelWeights w;
  INTERLACE_ASSIGN_OR_RETURN(w.embed, take(embed_tensor_name(), wd));
  INTERLACE_ASSIGN_OR_RETURN(w.final_norm, take(final_norm_tensor_name(), wd));
  INTERLACE_ASSIGN_OR_RETURN(w.lm_head, take(lm_head_tensor_name(c), precision.lm_head));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensorNames n = layer_tensor_names(c, i, naming);
    LayerWeights L;
    L.kind = c.layer_types[i];
    INTERLACE_ASSIGN_OR_RETURN(L.input_norm, take(n.input_norm, wd));
    INTERLACE_ASSIGN_OR_RETURN(L.post_norm, take(n.post_attention_norm, wd));
    if (L.kind == LayerKind::kLinearAttention) {
      INTERLACE_ASSIGN_OR_RETURN(L.qkv, linear(n.qkv_proj));
      INTERLACE_ASSIGN_OR_RETURN(L.gate, linear(n.output_gate));
      INTERLACE_ASSIGN_OR_RETURN(L.out, linear(n.out_proj));
      INTERLACE_ASSIGN_OR_RETURN(L.attn_norm, take(n.attention_out_norm, wd));
      L.attn_in = fuse({&L.qkv, &L.gate});
    } else {
      INTERLACE_ASSIGN_OR_RETURN(L.q, linear(n.q_proj, n.q_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.k, linear(n.k_proj, n.k_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.v, linear(n.v_proj, n.v_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.o, linear(n.o_proj, n.o_bias));
      if (c.qk_norm) {
        INTERLACE_ASSIGN_OR_RETURN(L.q_norm, take(n.q_norm, wd));
        INTERLACE_ASSIGN_OR_RETURN(L.k_norm, take(n.k_norm, wd));
      }
      L.attn_in = fuse({&L.q, &L.k, &L.v});
    }
    if (c.is_moe()) {
      const int64_t E = c.num_local_experts, I = c.intermediate_size;
      INTERLACE_ASSIGN_OR_RETURN(L.router, linear(n.router));
      if (naming == MoeNaming::kPacked) {
        INTERLACE_ASSIGN_OR_RETURN(Tensor gate_up, take(n.experts_gate_up, wd));
        INTERLACE_ASSIGN_OR_RETURN(Tensor down, take(n.experts_down, wd));
        for (int64_t e = 0; e < E; ++e) {
          // gate_up_proj[e] is [2I, H]: the first I rows are the gate (w1), the rest up (w3).
          Tensor gu = gate_up.slice_rows(e, e + 1).reshape({2 * I, c.hidden_size});
          L.expert_in.push_back({gu, {}});  // already stacked [gate; up]
          L.expert_gate.push_back({gu.slice_rows(0, I), {}});
          L.expert_up.push_back({gu.slice_rows(I, 2 * I), {}});
          L.expert_down.push_back({down.slice_rows(e, e + 1).reshape({c.hidden_size, I}), {}});
        }
      } else {
        for (int64_t e = 0; e < E; ++e) {
          INTERLACE_ASSIGN_OR_RETURN(Linear w1, linear(n.expert_gate[e]));
          INTERLACE_ASSIGN_OR_RETURN(Linear w2, linear(n.expert_down[e]));
          INTERLACE_ASSIGN_OR_RETURN(Linear w3, linear(n.expert_up[e]));
          L.expert_in.push_back(fuse({&w1, &w3}));
          L.expert_gate.push_back(w1);
          L.expert_up.push_back(w3);
          L.expert_down.push_back(w2);
        }
      }
    } else {
      INTERLACE_ASSIGN_OR_RETURN(L.mlp_gate, linear(n.gate_proj, n.gate_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.mlp_up, linear(n.up_proj, n.up_bias));
      INTERLACE_ASSIGN_OR_RETURN(L.mlp_down, linear(n.down_proj, n.down_bias));
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
