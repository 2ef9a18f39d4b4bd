#include "interlace/learner/objectives.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace interlace::learner {

absl::StatusOr<AdvantageEstimator> parse_advantage_estimator(const std::string& name) {
  if (name == "grpo") return AdvantageEstimator::kGrpo;
  if (name == "rloo") return AdvantageEstimator::kRloo;
  if (name == "reinforce") return AdvantageEstimator::kReinforce;
  return absl::InvalidArgumentError(absl::StrCat("unknown advantage estimator '", name, "' (use grpo, rloo or reinforce)"));
}

absl::StatusOr<PolicyLoss> parse_policy_loss(const std::string& name) {
  if (name == "ppo" || name == "grpo" || name == "dapo") return PolicyLoss::kPpo;
  if (name == "cispo") return PolicyLoss::kCispo;
  if (name == "gspo") return PolicyLoss::kGspo;
  return absl::InvalidArgumentError(absl::StrCat("unknown policy loss '", name, "' (use ppo, cispo or gspo)"));
}

absl::StatusOr<Aggregation> parse_aggregation(const std::string& name) {
  if (name == "token-mean") return Aggregation::kTokenMean;
  if (name == "seq-mean-token-sum") return Aggregation::kSeqMeanTokenSum;
  if (name == "seq-mean-token-mean") return Aggregation::kSeqMeanTokenMean;
  return absl::InvalidArgumentError(absl::StrCat("unknown loss aggregation '", name,
                                                 "' (use token-mean, seq-mean-token-sum or seq-mean-token-mean)"));
}

absl::StatusOr<RolloutCorrection> parse_rollout_correction(const std::string& name) {
  if (name == "none") return RolloutCorrection::kNone;
  if (name == "tis") return RolloutCorrection::kTis;
  if (name == "mis") return RolloutCorrection::kMis;
  return absl::InvalidArgumentError(absl::StrCat("unknown rollout correction '", name, "' (use none, tis or mis)"));
}

std::vector<std::vector<double>> compute_advantages(const std::vector<std::vector<double>>& groups,
                                                    const AdvantageConfig& config) {
  std::vector<std::vector<double>> out;
  double batch_sum = 0;
  int64_t batch_n = 0;
  for (const auto& g : groups) {
    for (double r : g) batch_sum += r;
    batch_n += static_cast<int64_t>(g.size());
  }
  const double batch_mean = batch_n ? batch_sum / double(batch_n) : 0.0;
  for (const auto& g : groups) {
    const double n = double(g.size());
    double sum = 0;
    for (double r : g) sum += r;
    const double mean = n > 0 ? sum / n : 0;
    double var = 0;
    for (double r : g) var += (r - mean) * (r - mean);
    const double std = n > 1 ? std::sqrt(var / (n - 1)) : 0;
    std::vector<double> a;
    for (double r : g) {
      switch (config.estimator) {
        case AdvantageEstimator::kGrpo:
          a.push_back(n < 2 ? 0.0 : config.normalize_std ? (r - mean) / (std + config.eps) : r - mean);
          break;
        case AdvantageEstimator::kRloo:
          a.push_back(n < 2 ? 0.0 : r - (sum - r) / (n - 1));
          break;
        case AdvantageEstimator::kReinforce:
          a.push_back(r - batch_mean);
          break;
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

int64_t PolicySample::trained_tokens() const {
  int64_t n = 0;
  for (size_t i = 1; i < loss_mask.size(); ++i) n += loss_mask[i];
  return n;
}

void ObjectiveStats::add(const ObjectiveStats& o) {
  loss += o.loss;
  kl += o.kl;
  tokens += o.tokens;
  clipped += o.clipped;
  corrected += o.corrected;
  ratio_sum += o.ratio_sum;
}

BatchShape batch_shape(std::span<const PolicySample* const> batch) {
  BatchShape s;
  for (const PolicySample* p : batch) {
    s.sequences += 1;
    s.tokens += p->trained_tokens();
  }
  return s;
}

absl::Status validate_sample(const ObjectiveConfig& config, const PolicySample& s, int64_t vocab) {
  const size_t T = s.tokens.size();
  if (s.loss_mask.size() != T)
    return absl::InvalidArgumentError(absl::StrCat("loss_mask has ", s.loss_mask.size(), " entries, tokens ", T));
  for (size_t i = 0; i < T; ++i)
    if (s.tokens[i] < 0 || s.tokens[i] >= vocab)
      return absl::InvalidArgumentError(absl::StrCat("tokens[", i, "] = ", s.tokens[i], " is outside [0, ", vocab, ")"));
  auto check = [&](const std::vector<float>& v, const char* what, bool required) -> absl::Status {
    if (v.empty() && !required) return absl::OkStatus();
    if (v.size() != T)
      return absl::InvalidArgumentError(absl::StrCat(what, " has ", v.size(), " entries, tokens ", T,
                                                     required ? " (required by the objective's settings)" : ""));
    for (size_t i = 1; i < T; ++i)
      if (s.loss_mask[i] && !std::isfinite(v[i]))
        return absl::InvalidArgumentError(absl::StrCat(what, "[", i, "] is not finite on a trained token"));
    return absl::OkStatus();
  };
  if (absl::Status st = check(s.old_logprobs, "old_logprobs", false); !st.ok()) return st;
  if (absl::Status st = check(s.rollout_logprobs, "rollout_logprobs", config.correction != RolloutCorrection::kNone);
      !st.ok())
    return st;
  if (absl::Status st = check(s.ref_logprobs, "ref_logprobs", config.kl_coef != 0); !st.ok()) return st;
  if (!std::isfinite(s.advantage)) return absl::InvalidArgumentError("advantage is not finite");
  return absl::OkStatus();
}

// The k3 estimate of KL(pi || pi_ref) at one token, d = log(pi_ref / pi):
// e^d - d - 1, and its pull -d/d log pi = e^d - 1. Beyond kKlLogRatioCap it
// goes on as the tangent line, so value and gradient stay one function and
// the pull stays bounded (e^3 - 1 = 19). Without this a token the policy has
// made 10 nats less likely than the reference pulled with e^10: on the main
// job one such step took the gradient norm from 0.2 to 203 and the sampled
// held-out reward down by 0.10 (issue 17). verl's low_var_kl clamps the value
// at 10 instead, which drops the pull altogether where it is largest.
namespace {
constexpr double kKlLogRatioCap = 3.0;
struct KlTerm {
  double value, pull;
};
KlTerm k3_term(double d) {
  if (d <= kKlLogRatioCap) return {std::exp(d) - d - 1.0, std::exp(d) - 1.0};
  const double at_cap = std::exp(kKlLogRatioCap) - kKlLogRatioCap - 1.0, slope = std::exp(kKlLogRatioCap) - 1.0;
  return {at_cap + slope * (d - kKlLogRatioCap), slope};
}
}  // namespace

std::vector<float> policy_coefficients(const ObjectiveConfig& c, const PolicySample& s,
                                       const std::vector<float>& lp, const BatchShape& shape,
                                       ObjectiveStats* stats) {
  const size_t T = s.tokens.size();
  std::vector<float> coef(T, 0.0f);
  const int64_t n = s.trained_tokens();
  ObjectiveStats local;
  if (n == 0 || shape.sequences == 0) {
    if (stats) stats->add(local);
    return coef;
  }
  // Aggregation weight of one token's term.
  const bool per_sequence = c.loss == PolicyLoss::kGspo;
  double alpha = 0;
  if (per_sequence || c.aggregation == Aggregation::kSeqMeanTokenMean)
    alpha = 1.0 / (double(shape.sequences) * double(n));
  else if (c.aggregation == Aggregation::kSeqMeanTokenSum)
    alpha = 1.0 / double(shape.sequences);
  else
    alpha = 1.0 / double(shape.tokens);
  const double A = s.advantage, lo = 1.0 - c.eps_low, hi = 1.0 + c.eps_high;
  auto old_of = [&](size_t t) { return s.old_logprobs.empty() ? double(lp[t]) : double(s.old_logprobs[t]); };
  // GSPO's sequence ratio and whether its unclipped branch is active.
  double seq_ratio = 1.0;
  bool seq_active = true;
  if (per_sequence) {
    double sum = 0;
    for (size_t t = 1; t < T; ++t)
      if (s.loss_mask[t]) sum += double(lp[t]) - old_of(t);
    seq_ratio = std::exp(sum / double(n));
    seq_active = A >= 0 ? seq_ratio <= hi : seq_ratio >= lo;
    local.loss -= std::min(seq_ratio * A, std::clamp(seq_ratio, lo, hi) * A) / double(shape.sequences);
  }
  for (size_t t = 1; t < T; ++t) {
    if (!s.loss_mask[t]) continue;
    ++local.tokens;
    // Rollout correction weight w (1 when none).
    double w = 1.0;
    if (c.correction != RolloutCorrection::kNone) {
      const double iw = std::exp(old_of(t) - double(s.rollout_logprobs[t]));
      if (c.correction == RolloutCorrection::kTis) {
        if (iw > c.correction_cap) {
          w = c.correction_cap;
          ++local.corrected;
        } else {
          w = iw;
        }
      } else if (iw > c.correction_cap || iw < 1.0 / c.correction_cap) {
        w = 0.0;
        ++local.corrected;
      }
    }
    const double r = std::exp(double(lp[t]) - old_of(t));
    local.ratio_sum += r;
    double g = 0;  // -d(term)/d log pi_t, before alpha
    switch (c.loss) {
      case PolicyLoss::kPpo: {
        const double clipped = std::clamp(r, lo, hi);
        const bool active = A >= 0 ? r <= hi : r >= lo;
        if (!active) ++local.clipped;
        g = active ? w * r * A : 0.0;
        local.loss -= alpha * w * std::min(r * A, clipped * A);
        break;
      }
      case PolicyLoss::kCispo: {
        const double clipped = std::clamp(r, lo, hi);
        if (clipped != r) ++local.clipped;
        g = w * clipped * A;
        local.loss -= alpha * w * clipped * A * double(lp[t]);
        break;
      }
      case PolicyLoss::kGspo:
        if (!seq_active) ++local.clipped;
        g = seq_active ? w * seq_ratio * A : 0.0;
        break;
    }
    if (c.kl_coef != 0) {
      const KlTerm kl = k3_term(double(s.ref_logprobs[t]) - double(lp[t]));
      local.kl += alpha * kl.value;
      local.loss += alpha * c.kl_coef * kl.value;
      g += c.kl_coef * kl.pull;
    }
    coef[t] = static_cast<float>(alpha * g);
  }
  if (stats) stats->add(local);
  return coef;
}

ObjectiveStats policy_accumulate(const TrainingModel& model, const ObjectiveConfig& config,
                                 std::span<const PolicySample* const> batch, model::NamedTensors& grads,
                                 std::vector<std::vector<float>>* logprobs) {
  const BatchShape shape = batch_shape(batch);
  ObjectiveStats stats;
  if (logprobs) logprobs->clear();
  for (const PolicySample* s : batch) {
    std::vector<float> lp;
    model.forward_backward(
        s->tokens,
        [&](const std::vector<float>& current) { return policy_coefficients(config, *s, current, shape, &stats); },
        grads, &lp);
    if (logprobs) logprobs->push_back(std::move(lp));
  }
  return stats;
}

}  // namespace interlace::learner
