#include "interlace/rl/rl_step.h"

#include <cmath>
#include <utility>
#include <vector>

namespace interlace::rl {

RlStepResult rl_step(const Batch& batch, const JobSpec& spec, const ModelState& state) {
  RlStepResult r;
  r.groups = static_cast<int64_t>(batch.size());
  PolicyBatch pb = make_policy_batch(batch, state.version, spec, state.reference);
  r.downweighted = pb.downweighted;
  r.trained_ids = std::move(pb.trained_ids);
  r.reward_sum = pb.reward_sum;
  r.reward_n = pb.reward_n;
  r.tokens = pb.tokens;
  r.lag_sum = pb.lag_sum;
  r.lag_max = pb.lag_max;
  r.lag_n = pb.lag_n;
  const std::vector<learner::PolicySample>& samples = pb.samples;
  std::vector<const learner::PolicySample*> ptrs;
  for (const auto& p : samples) ptrs.push_back(&p);
  model::NamedTensors grads = state.model.zero_grads();
  std::vector<std::vector<float>> logprobs;
  // The forward still runs without a signal, for the mismatch figures.
  r.signal = spec.objective.kl_coef > 0;
  for (const auto& p : samples) r.signal = r.signal || p.advantage != 0;
  if (!ptrs.empty()) {
    r.objective = learner::policy_accumulate(state.model, spec.objective, ptrs, grads, &logprobs);
    if (r.signal) {
      r.optimizer = state.optimizer.step(state.model.weights(), grads, state.step);
      state.model.weights_changed();
    }
  }
  // The learner's log-probs against the rollout's, on trained tokens only.
  learner::MismatchAccumulator mismatch;
  for (size_t i = 0; i < samples.size(); ++i) {
    std::vector<float> train = logprobs[i], roll = samples[i].rollout_logprobs;
    for (size_t j = 0; j < train.size(); ++j)
      if (!samples[i].loss_mask[j]) train[j] = roll[j] = NAN;
    mismatch.add(roll, train);
  }
  r.mismatch = mismatch.metrics();
  return r;
}

}  // namespace interlace::rl
