// Precision profiles: the dtype of every place numbers are stored. Stored
// values are rounded to their dtype (round to nearest even); accumulation is
// always fp32. The rollout and the learner each run a profile.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/core/dtype.h"

namespace interlace::model {

struct PrecisionProfile {
  std::string name = "fp32";
  core::DType weights = core::DType::kF32;      // every weight except the LM head
  core::DType activations = core::DType::kF32;  // outputs of every op (the residual stream too)
  core::DType kv_cache = core::DType::kF32;     // keys and values of softmax layers
  core::DType state = core::DType::kF32;        // lightning recurrent states
  core::DType lm_head = core::DType::kF32;      // LM head weight, its input and the logits
  // Batch- and split-invariant kernels (kernels::strict_backend): rollout decode
  // and the training forward run the same operations in the same order and
  // agree bit for bit. fp32 throughout; costs GEMM speed.
  bool strict = false;

  std::string describe() const;
};

// Named profiles: fp32, bf16 (bf16 everywhere but the fp32 recurrent state),
// bf16-fp32head (bf16 with an fp32 LM head, as MiniMax-M1 found RL needs),
// strict (fp32 on the strict kernels), and
// custom ones written as "weights=bf16,activations=bf16,kv=bf16,state=f32,head=f32".
absl::StatusOr<PrecisionProfile> parse_precision(const std::string& spec);
std::vector<std::string> precision_profile_names();

}  // namespace interlace::model
