// Token-level RL objectives, advantages and rollout correction.
//
// Every objective here is a sum over trained tokens of a term whose gradient
// with respect to log pi(token) is known in closed form. So an objective is
// computed as per-token coefficients c_t on the negative log-likelihood: the
// training backward of sum_t c_t * -log pi_t is the objective's gradient. The
// coefficients are computed from the forward's own log-probs (one forward per
// sequence; TrainingModel::forward_backward with a ScaleFn).
//
// Notation: pi = the policy being trained (this forward), pi_old = the policy
// the ratio is taken against (the learner's recomputation for the rollout's
// weights; when absent, pi itself detached, i.e. a ratio of 1), pi_rollout = the
// log-probs the rollout engine reported, A = the sequence's advantage.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/learner/training_model.h"

namespace interlace::learner {

// ---- Advantages -----------------------------------------------------------

enum class AdvantageEstimator {
  kGrpo,       // r - mean(group), divided by the group's std when normalising
  kRloo,       // r - mean of the *other* samples of the group
  kReinforce,  // r - baseline (the mean reward of the whole batch)
};
absl::StatusOr<AdvantageEstimator> parse_advantage_estimator(const std::string& name);

struct AdvantageConfig {
  AdvantageEstimator estimator = AdvantageEstimator::kGrpo;
  bool normalize_std = true;  // GRPO only; Dr. GRPO turns it off
  double eps = 1e-6;          // added to the std
};

// One advantage per sample; `groups[g]` holds the rewards of group g's samples
// (samples of one prompt). The std is the sample std (n-1), as torch.std; a
// group of one gets advantage 0 under GRPO and RLOO.
std::vector<std::vector<double>> compute_advantages(const std::vector<std::vector<double>>& groups,
                                                    const AdvantageConfig& config);

// ---- Policy objectives ----------------------------------------------------

enum class PolicyLoss {
  kPpo,    // -min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token (GRPO; DAPO's clip-higher with eps_high > eps_low)
  kCispo,  // -sg(clip(r, 1-eps_low, 1+eps_high)) A log pi per token (MiniMax-M1): every token keeps a gradient
  kGspo,   // PPO clipping on the sequence ratio s = exp(mean_t log(pi/pi_old)) (GSPO)
};
enum class Aggregation {
  kTokenMean,         // sum over all trained tokens / their number in the batch
  kSeqMeanTokenSum,   // mean over sequences of each sequence's token sum
  kSeqMeanTokenMean,  // mean over sequences of each sequence's token mean
};
enum class RolloutCorrection {
  kNone,
  kTis,  // truncated importance sampling: weight min(pi_old / pi_rollout, C)
  kMis,  // masked importance sampling: drop tokens whose pi_old / pi_rollout leaves [1/C, C]
};
absl::StatusOr<PolicyLoss> parse_policy_loss(const std::string& name);
absl::StatusOr<Aggregation> parse_aggregation(const std::string& name);
absl::StatusOr<RolloutCorrection> parse_rollout_correction(const std::string& name);

struct ObjectiveConfig {
  PolicyLoss loss = PolicyLoss::kPpo;
  double eps_low = 0.2, eps_high = 0.2;  // GSPO uses much smaller ranges (3e-4, 4e-4)
  double kl_coef = 0.0;                  // k3 estimator of KL(pi || pi_ref), needs ref_logprobs
  Aggregation aggregation = Aggregation::kTokenMean;  // GSPO always averages per sequence
  RolloutCorrection correction = RolloutCorrection::kNone;
  double correction_cap = 2.0;  // C
};

// One trajectory as the learner trains on it. Per-token vectors have one entry
// per token; entries where loss_mask is 0 (and entry 0) are ignored.
struct PolicySample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;
  double advantage = 0;
  std::vector<float> old_logprobs;      // empty: ratio against the current policy (r = 1)
  std::vector<float> rollout_logprobs;  // needed when correction != none
  std::vector<float> ref_logprobs;      // needed when kl_coef > 0
  int64_t trained_tokens() const;
};

// Counts a batch's statistics add up over.
struct ObjectiveStats {
  double loss = 0;            // the objective's value (with the KL term)
  double kl = 0;              // aggregated k3 (weighted as the loss)
  int64_t tokens = 0;         // trained tokens
  int64_t clipped = 0;        // tokens whose clipped branch was taken (PPO/GSPO) or ratio clipped (CISPO)
  int64_t corrected = 0;      // tokens truncated (TIS) or masked (MIS)
  double ratio_sum = 0;       // sum of r over trained tokens
  void add(const ObjectiveStats& o);
  double clip_fraction() const { return tokens ? double(clipped) / tokens : 0; }
  double correction_fraction() const { return tokens ? double(corrected) / tokens : 0; }
};

// What aggregation needs to know about the whole batch.
struct BatchShape {
  int64_t sequences = 0;
  int64_t tokens = 0;  // trained tokens in the batch
};
BatchShape batch_shape(std::span<const PolicySample* const> batch);

// The per-token coefficients on -log pi (entry 0 and masked tokens 0) and the
// statistics, for one sample given the current log-probs.
std::vector<float> policy_coefficients(const ObjectiveConfig& config, const PolicySample& sample,
                                       const std::vector<float>& logprobs, const BatchShape& shape,
                                       ObjectiveStats* stats);

// Checks the sample against the config (lengths, required log-probs).
absl::Status validate_sample(const ObjectiveConfig& config, const PolicySample& sample, int64_t vocab);

// Forward + backward of the objective over a batch: adds the gradient into
// `grads`, returns the statistics; `logprobs`, when given, receives each
// sample's recomputed log-probs (for the precision-consistency report).
ObjectiveStats policy_accumulate(const TrainingModel& model, const ObjectiveConfig& config,
                                 std::span<const PolicySample* const> batch, model::NamedTensors& grads,
                                 std::vector<std::vector<float>>* logprobs = nullptr);

}  // namespace interlace::learner
