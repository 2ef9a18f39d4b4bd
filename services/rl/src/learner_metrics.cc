#include "interlace/rl/learner_metrics.h"

namespace interlace::rl {

LearnerStepMetrics::LearnerStepMetrics(metrics::Registry& r)
    : kl_(r.gauge("interlace_learner_kl", "k3 estimate of KL(policy || reference) of the last step, per token")),
      grad_norm_(r.gauge("interlace_learner_grad_norm", "global gradient L2 norm of the last step, before clipping")),
      clip_fraction_(r.gauge("interlace_learner_clip_fraction",
                             "fraction of the last step's tokens whose ratio was clipped (PPO, GSPO, CISPO)")),
      correction_fraction_(r.gauge("interlace_learner_correction_fraction",
                                   "fraction of the last step's tokens truncated (TIS) or masked (MIS)")),
      logprob_abs_diff_max_(r.gauge("interlace_logprob_abs_diff_max",
                                    "largest |learner log-prob - rollout log-prob| over the last step's tokens")),
      token_mult_prob_error_(r.gauge("interlace_token_mult_prob_error",
                                     "mean exp(|learner log-prob - rollout log-prob|) over the last step's tokens "
                                     "(1: identical)")),
      tokens_trained_(r.counter("interlace_learner_tokens_trained_total", "tokens the objective was computed on")),
      step_seconds_(r.histogram("interlace_rl_step_duration_seconds",
                                "time of one RL step on the learner (log-probs, objective, optimizer)",
                                metrics::seconds_buckets())) {}

void LearnerStepMetrics::record(const RlStepResult& step, double seconds) {
  kl_.set(step.objective.kl);
  grad_norm_.set(step.optimizer.grad_norm);
  clip_fraction_.set(step.objective.clip_fraction());
  correction_fraction_.set(step.objective.correction_fraction());
  logprob_abs_diff_max_.set(step.mismatch.logprob_abs_diff_max);
  token_mult_prob_error_.set(step.mismatch.token_mult_prob_error);
  tokens_trained_.add(double(step.objective.tokens));
  step_seconds_.Observe(seconds);
}

}  // namespace interlace::rl
