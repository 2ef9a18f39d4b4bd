// The learner's per-step figures for Prometheus that the dashboards and alert
// rules read (dashboards/): KL to the reference, gradient norm, clip and
// rollout-correction fractions, the worst and multiplicative rollout/learner
// mismatch, tokens trained, and how long steps take. Every series exists at 0
// from the start, so rules and rate() see them before the first step.
#pragma once

#include "interlace/metrics/registry.h"
#include "interlace/rl/rl_step.h"

namespace interlace::rl {

class LearnerStepMetrics {
 public:
  explicit LearnerStepMetrics(metrics::Registry& registry);
  // One finished step; `seconds`: from the batch being taken to the result.
  void record(const RlStepResult& step, double seconds);

 private:
  metrics::Value &kl_, &grad_norm_, &clip_fraction_, &correction_fraction_, &logprob_abs_diff_max_,
      &token_mult_prob_error_, &tokens_trained_;
  prometheus::Histogram& step_seconds_;
};

}  // namespace interlace::rl
