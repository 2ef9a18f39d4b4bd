// Optimizers over fp32 master weights: AdamW and plain SGD, with weight decay,
// global-norm gradient clipping, a learning-rate warm-up then a constant or
// cosine schedule, and a guard that skips (and counts) any step whose
// gradients hold NaN or Inf instead of applying it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "interlace/model/weights.h"

namespace interlace::learner {

enum class OptimizerKind { kAdamW, kSgd };
enum class LrSchedule { kConstant, kCosine };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double lr = 1e-3;
  // AdamW moments. MiniMax-M1 trained with (0.9, 0.95) and eps 1e-15.
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  // Decoupled (AdamW) or L2 (SGD) decay, applied to matrices only: norms and
  // biases are not decayed (decaying a norm weight shrinks a layer's output).
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // 0 disables clipping
  int64_t warmup_steps = 0;    // linear warm-up from lr/warmup to lr
  LrSchedule schedule = LrSchedule::kConstant;
  int64_t total_steps = 0;     // cosine decays to min_lr_ratio*lr at this step
  double min_lr_ratio = 0.0;
};

absl::StatusOr<OptimizerKind> parse_optimizer_kind(const std::string& name);
absl::StatusOr<LrSchedule> parse_lr_schedule(const std::string& name);
const char* optimizer_kind_name(OptimizerKind kind);

// The learning rate of step `step` (0-based).
double learning_rate(const OptimizerConfig& config, int64_t step);

struct StepReport {
  bool applied = false;    // false: the gradients were not finite, nothing changed
  double grad_norm = 0;    // global L2 norm before clipping
  bool clipped = false;
  double lr = 0;
};

class Optimizer {
 public:
  Optimizer(OptimizerConfig config, const model::NamedTensors& params);

  const OptimizerConfig& config() const { return config_; }
  // Applies one update for step `step` (0-based, selects the learning rate).
  // `grads` holds d loss / d params by name; clipping scales it in place.
  StepReport step(model::NamedTensors& params, model::NamedTensors& grads, int64_t step);

  int64_t applied_steps() const { return applied_; }
  int64_t skipped_steps() const { return skipped_; }

  // Optimizer state as tensors ("exp_avg.<param>", "exp_avg_sq.<param>") plus
  // counters, for checkpoints; restore() checks names and shapes.
  model::NamedTensors state() const;
  absl::Status restore(const model::NamedTensors& state, int64_t applied_steps, int64_t skipped_steps);

 private:
  OptimizerConfig config_;
  model::NamedTensors exp_avg_, exp_avg_sq_;  // AdamW only
  int64_t applied_ = 0, skipped_ = 0;
};

}  // namespace interlace::learner
