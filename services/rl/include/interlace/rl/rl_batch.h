// The first half of an RL step, as a function: a batch of complete sampling
// groups (as the learner holds them) becomes the policy samples the objective
// trains on, with advantages computed per group and scaled for staleness, and
// the figures the step reports. No sockets, no model state but the reference
// model's log-probs (for a KL term), so it is tested alone.
//
// Staleness: a group's lag is the current version minus the oldest version
// among its trained tokens. With policy `drop` the learner never trains a
// group whose lag exceeds eta; with `downweight` its advantages are scaled by
// stale_weight ^ (lag - eta).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "interlace/learner/objectives.h"
#include "interlace/learner/training_model.h"
#include "interlace/rl/job_spec.h"
#include "interlace/transport/trajectory_codec.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

// (group, sample): what a trajectory is trained on at most once as.
using SampleKey = std::pair<int64_t, int64_t>;

// group -> sample -> trajectory
using Batch = std::map<int64_t, std::map<int64_t, transport::TrajectoryMessage>>;

// Versions a group is behind `version`: the oldest version among its trained tokens.
int64_t group_lag(const std::map<int64_t, transport::TrajectoryMessage>& group, int64_t version);
// What a group's advantages are multiplied by: 1 within eta versions, else
// stale_weight ^ (lag - eta) (policy downweight; policy drop never trains them).
double staleness_weight(int64_t lag, const JobSpec& spec);

struct PolicyBatch {
  std::vector<learner::PolicySample> samples;  // in batch order: groups by id, samples by index
  nlohmann::json trained_ids = nlohmann::json::array();  // [[group, sample], ...], the same order
  int64_t downweighted = 0;                    // samples whose advantage was scaled down
  double reward_sum = 0;
  int64_t reward_n = 0, tokens = 0;            // tokens: generated ones
  double lag_sum = 0, lag_max = 0;
  int64_t lag_n = 0;
};

// `ref_model`: when the objective has a KL term, the model it is measured
// against (its log-probs go into each sample); null otherwise.
PolicyBatch make_policy_batch(const Batch& batch, int64_t version, const JobSpec& spec,
                              const learner::TrainingModel* ref_model);

}  // namespace interlace::rl
