#include "interlace/learner/optimizer.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"

namespace interlace::learner {

using core::Tensor;

absl::StatusOr<OptimizerKind> parse_optimizer_kind(const std::string& name) {
  if (name == "adamw") return OptimizerKind::kAdamW;
  if (name == "sgd") return OptimizerKind::kSgd;
  return absl::InvalidArgumentError(absl::StrCat("unknown optimizer '", name, "' (use adamw or sgd)"));
}

absl::StatusOr<LrSchedule> parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::kConstant;
  if (name == "cosine") return LrSchedule::kCosine;
  return absl::InvalidArgumentError(absl::StrCat("unknown learning-rate schedule '", name,
                                                 "' (use constant or cosine)"));
}

const char* optimizer_kind_name(OptimizerKind kind) { return kind == OptimizerKind::kAdamW ? "adamw" : "sgd"; }

double learning_rate(const OptimizerConfig& c, int64_t step) {
  if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
  if (c.schedule == LrSchedule::kConstant) return c.lr;
  const int64_t span = std::max<int64_t>(1, c.total_steps - c.warmup_steps);
  const double progress = std::min(1.0, double(step - c.warmup_steps) / double(span));
  const double min_lr = c.lr * c.min_lr_ratio;
  return min_lr + (c.lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

namespace {
bool decayed(const Tensor& t) { return t.shape().size() >= 2; }
}  // namespace

Optimizer::Optimizer(OptimizerConfig config, const model::NamedTensors& params) : config_(config) {
  if (config_.kind == OptimizerKind::kAdamW)
    for (const auto& [name, p] : params) {
      exp_avg_[name] = Tensor::zeros(p.shape());
      exp_avg_sq_[name] = Tensor::zeros(p.shape());
    }
}

StepReport Optimizer::step(model::NamedTensors& params, model::NamedTensors& grads, int64_t step) {
  StepReport r;
  r.lr = learning_rate(config_, step);
  double sq = 0;
  for (auto& [name, g] : grads) {
    const float* d = g.f32();
    for (int64_t i = 0; i < g.numel(); ++i) sq += double(d[i]) * d[i];
  }
  r.grad_norm = std::sqrt(sq);
  if (!std::isfinite(r.grad_norm)) {  // NaN or Inf anywhere (or overflow of the norm itself)
    ++skipped_;
    return r;
  }
  float clip = 1.0f;
  if (config_.max_grad_norm > 0 && r.grad_norm > config_.max_grad_norm) {
    clip = static_cast<float>(config_.max_grad_norm / (r.grad_norm + 1e-6));
    r.clipped = true;
  }
  ++applied_;
  r.applied = true;
  const float lr = static_cast<float>(r.lr), wd = static_cast<float>(config_.weight_decay);
  const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
  const double bias1 = 1.0 - std::pow(config_.beta1, double(applied_));
  const double bias2 = 1.0 - std::pow(config_.beta2, double(applied_));
  const float step_size = static_cast<float>(r.lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float eps = static_cast<float>(config_.eps);
  for (auto& [name, p] : params) {
    auto git = grads.find(name);
    if (git == grads.end()) continue;
    float* w = p.f32();
    float* g = git->second.f32();
    const int64_t n = p.numel();
    const float decay = decayed(p) ? wd : 0.0f;
    if (clip != 1.0f)
      for (int64_t i = 0; i < n; ++i) g[i] *= clip;
    if (config_.kind == OptimizerKind::kSgd) {
      for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + decay * w[i]);
      continue;
    }
    float* m = exp_avg_.at(name).f32();
    float* v = exp_avg_sq_.at(name).f32();
    const float keep = 1.0f - lr * decay;
    for (int64_t i = 0; i < n; ++i) {
      w[i] *= keep;
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
      w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
    }
  }
  return r;
}

model::NamedTensors Optimizer::state() const {
  model::NamedTensors out;
  for (const auto& [name, t] : exp_avg_) out["exp_avg." + name] = t;
  for (const auto& [name, t] : exp_avg_sq_) out["exp_avg_sq." + name] = t;
  return out;
}

absl::Status Optimizer::restore(const model::NamedTensors& state, int64_t applied_steps, int64_t skipped_steps) {
  for (auto* part : {&exp_avg_, &exp_avg_sq_}) {
    const std::string prefix = part == &exp_avg_ ? "exp_avg." : "exp_avg_sq.";
    for (auto& [name, t] : *part) {
      auto it = state.find(prefix + name);
      if (it == state.end())
        return absl::InvalidArgumentError(absl::StrCat("optimizer state lacks ", prefix, name));
      if (it->second.shape() != t.shape())
        return absl::InvalidArgumentError(absl::StrCat("optimizer state ", prefix, name, " has the wrong shape"));
      t = it->second.to_f32().clone();
    }
  }
  const size_t expected = exp_avg_.size() + exp_avg_sq_.size();
  if (state.size() != expected)
    return absl::InvalidArgumentError(absl::StrCat("optimizer state holds ", state.size(), " tensors, expected ",
                                                   expected, " (was it written for another optimizer or model?)"));
  applied_ = applied_steps;
  skipped_ = skipped_steps;
  return absl::OkStatus();
}

}  // namespace interlace::learner
