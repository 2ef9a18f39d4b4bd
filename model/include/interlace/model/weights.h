// Model weights by layer, named and shaped exactly as the Hugging Face
// checkpoints of each architecture name them.
#pragma once

#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/core/tensor.h"
#include "interlace/model/architecture.h"
#include "interlace/model/config.h"
#include "interlace/model/precision.h"
#include "interlace/model/safetensors.h"

namespace interlace::model {

struct WeightSpec {
  std::string name;
  core::Shape shape;
  bool is_norm = false;  // initialised to ones
};

std::vector<WeightSpec> weight_specs(const ModelConfig& config, MoeNaming naming = MoeNaming::kPacked);

struct Linear {
  core::Tensor weight;  // [out, in] f32
  core::Tensor bias;    // [out] f32, or undefined
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
};

// The projections that read the same input are also kept fused (one matrix with
// their rows stacked; the separate Linears are row views of it), so a decode step
// runs one GEMV where it would run two or three.
struct LayerWeights {
  LayerKind kind = LayerKind::kFullAttention;
  Linear attn_in;   // softmax: [q; k; v]; lightning: [qkv; output_gate]
  Linear mlp_in;    // dense MLP: [gate; up]
  std::vector<Linear> expert_in;  // per expert: [gate (w1); up (w3)]
  core::Tensor input_norm, post_norm;
  // Softmax attention.
  Linear q, k, v, o;
  core::Tensor q_norm, k_norm;  // Qwen3
  // Lightning attention.
  Linear qkv, out, gate;
  core::Tensor attn_norm;
  // Dense SwiGLU MLP.
  Linear mlp_gate, mlp_up, mlp_down;
  // MoE.
  Linear router;
  std::vector<Linear> expert_gate, expert_up, expert_down;
};

struct ModelWeights {
  core::Tensor embed;       // [vocab, hidden]
  core::Tensor final_norm;  // [hidden]
  core::Tensor lm_head;     // [vocab, hidden] (a separate copy when tied but rounded differently)
  std::vector<LayerWeights> layers;
};

using NamedTensors = std::map<std::string, core::Tensor>;

// Loads every tensor the config needs from the checkpoint, checking shapes,
// converting to f32 and rounding to the profile's dtypes. Errors name the
// file and the tensor.
absl::StatusOr<ModelWeights> load_weights(const ModelConfig& config, const Checkpoint& checkpoint,
                                          const PrecisionProfile& precision);
// Builds weights from named f32 tensors (a checkpoint read, or a random init).
absl::StatusOr<ModelWeights> assemble_weights(const ModelConfig& config, const NamedTensors& tensors,
                                              const PrecisionProfile& precision);
// Random initialisation as transformers does it: normal(0, std) for matrices
// and embeddings, ones for norms.
NamedTensors random_weights(const ModelConfig& config, uint64_t seed, float stddev = 0.02f,
                            MoeNaming naming = MoeNaming::kPacked);

}  // namespace interlace::model
