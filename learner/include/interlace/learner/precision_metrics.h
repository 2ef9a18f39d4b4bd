// How far the learner's recomputed log-probabilities are from the rollout's,
// token by token. Names follow the conventions RL frameworks report them under.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "nlohmann/json.hpp"

namespace interlace::learner {

struct MismatchMetrics {
  int64_t tokens = 0;
  double logprob_abs_diff_mean = 0;  // mean |logp_train - logp_rollout|
  double logprob_abs_diff_max = 0;
  double prob_abs_diff_mean = 0;     // mean |p_train - p_rollout|
  double prob_abs_diff_max = 0;
  double mismatch_k3_kl = 0;         // mean of r - 1 - log r, r = p_train / p_rollout (estimates KL(rollout || train))
  double prob_pearson = 1;           // Pearson correlation of p_rollout and p_train over tokens
  double token_mult_prob_error = 1;  // mean exp(|logp_train - logp_rollout|)
};

// Accumulates token pairs; entries where either value is NaN (a sequence's first
// token, which has no log-probability) are skipped.
class MismatchAccumulator {
 public:
  void add(std::span<const float> rollout_logprobs, std::span<const float> train_logprobs);
  MismatchMetrics metrics() const;

 private:
  std::vector<double> rollout_, train_;
};

nlohmann::json to_json(const MismatchMetrics& m);

}  // namespace interlace::learner
