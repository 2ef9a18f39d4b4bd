#include "interlace/learner/precision_metrics.h"

#include <algorithm>
#include <cmath>

#include "interlace/core/status.h"

namespace interlace::learner {

void MismatchAccumulator::add(std::span<const float> rollout, std::span<const float> train) {
  INTERLACE_CHECK(rollout.size() == train.size(), "mismatch: log-prob arrays of different lengths");
  for (size_t i = 0; i < rollout.size(); ++i) {
    if (std::isnan(rollout[i]) || std::isnan(train[i])) continue;
    rollout_.push_back(rollout[i]);
    train_.push_back(train[i]);
  }
}

MismatchMetrics MismatchAccumulator::metrics() const {
  MismatchMetrics m;
  const size_t n = rollout_.size();
  m.tokens = static_cast<int64_t>(n);
  if (n == 0) return m;
  double sum_p_r = 0, sum_p_t = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = train_[i] - rollout_[i];
    const double pr = std::exp(rollout_[i]), pt = std::exp(train_[i]);
    m.logprob_abs_diff_mean += std::fabs(d);
    m.logprob_abs_diff_max = std::max(m.logprob_abs_diff_max, std::fabs(d));
    m.prob_abs_diff_mean += std::fabs(pt - pr);
    m.prob_abs_diff_max = std::max(m.prob_abs_diff_max, std::fabs(pt - pr));
    m.mismatch_k3_kl += std::expm1(d) - d;  // r - 1 - log r with r = e^d, without cancellation
    m.token_mult_prob_error += std::exp(std::fabs(d));
    sum_p_r += pr;
    sum_p_t += pt;
  }
  m.token_mult_prob_error -= 1;  // it started at 1 (the value for no tokens)
  m.logprob_abs_diff_mean /= n;
  m.prob_abs_diff_mean /= n;
  m.mismatch_k3_kl /= n;
  m.token_mult_prob_error /= n;
  const double mean_r = sum_p_r / n, mean_t = sum_p_t / n;
  double cov = 0, var_r = 0, var_t = 0;
  for (size_t i = 0; i < n; ++i) {
    const double a = std::exp(rollout_[i]) - mean_r, b = std::exp(train_[i]) - mean_t;
    cov += a * b;
    var_r += a * a;
    var_t += b * b;
  }
  m.prob_pearson = (var_r > 0 && var_t > 0) ? cov / std::sqrt(var_r * var_t) : 1.0;
  return m;
}

nlohmann::json to_json(const MismatchMetrics& m) {
  return {{"tokens", m.tokens},
          {"logprob_abs_diff_mean", m.logprob_abs_diff_mean},
          {"logprob_abs_diff_max", m.logprob_abs_diff_max},
          {"prob_abs_diff_mean", m.prob_abs_diff_mean},
          {"prob_abs_diff_max", m.prob_abs_diff_max},
          {"mismatch_k3_kl", m.mismatch_k3_kl},
          {"prob_pearson", m.prob_pearson},
          {"token_mult_prob_error", m.token_mult_prob_error}};
}

}  // namespace interlace::learner
