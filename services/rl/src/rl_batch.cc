#include "interlace/rl/rl_batch.h"

#include <algorithm>
#include <cmath>

namespace interlace::rl {

int64_t group_lag(const std::map<int64_t, transport::TrajectoryMessage>& group, int64_t version) {
  int64_t lag = 0;
  for (const auto& [s, m] : group)
    for (size_t i = 0; i < m.trajectory.versions.size(); ++i)
      if (m.trajectory.loss_mask[i]) lag = std::max(lag, version - m.trajectory.versions[i]);
  return lag;
}

double staleness_weight(int64_t lag, const JobSpec& spec) {
  return lag > spec.eta ? std::pow(spec.stale_weight, double(lag - spec.eta)) : 1.0;
}

PolicyBatch make_policy_batch(const Batch& batch, int64_t version, const JobSpec& spec,
                              const learner::TrainingModel* ref_model) {
  PolicyBatch out;
  std::vector<const transport::TrajectoryMessage*> messages;
  std::vector<std::vector<double>> rewards;
  std::vector<double> weights;
  for (const auto& [g, group] : batch) {
    const int64_t lag = group_lag(group, version);
    const double weight = staleness_weight(lag, spec);
    if (weight != 1.0) out.downweighted += static_cast<int64_t>(group.size());
    rewards.emplace_back();
    for (const auto& [s, m] : group) {
      messages.push_back(&m);
      out.tokens += m.trajectory.generated_tokens();
      rewards.back().push_back(m.trajectory.reward);
      out.reward_sum += m.trajectory.reward;
      ++out.reward_n;
      weights.push_back(weight);
      out.trained_ids.push_back({g, s});
      out.lag_sum += double(lag);
      out.lag_max = std::max(out.lag_max, double(lag));
      ++out.lag_n;
    }
  }
  const auto advantages = learner::compute_advantages(rewards, spec.advantage);
  size_t k = 0;
  for (const auto& group_advantages : advantages)
    for (double a : group_advantages) {
      const rollout::Trajectory& t = messages[k]->trajectory;
      learner::PolicySample p;
      p.tokens = t.tokens;
      p.loss_mask = t.loss_mask;
      p.advantage = a * weights[k];
      // The behaviour policy's log-probs: of the distribution the worker sampled
      // from (temperature and top-p), which the learner's (at the temperature)
      // are corrected against; raw ones only for greedy rollouts.
      p.rollout_logprobs = spec.temperature > 0 ? t.sampled_logprobs : t.logprobs;
      if (ref_model) p.ref_logprobs = ref_model->logprobs(t.tokens);
      out.samples.push_back(std::move(p));
      ++k;
    }
  return out;
}

}  // namespace interlace::rl
