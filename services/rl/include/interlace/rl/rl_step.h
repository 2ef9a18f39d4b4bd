// The RL step, as a function: a batch of complete groups and the model state
// in, the model and optimizer updated, a named result out. It runs on the
// learner's training thread while the event loop keeps serving the sockets;
// it touches only what it is given.
#pragma once

#include <cstdint>

#include "interlace/learner/objectives.h"
#include "interlace/learner/optimizer.h"
#include "interlace/learner/precision_metrics.h"
#include "interlace/learner/training_model.h"
#include "interlace/rl/job_spec.h"
#include "interlace/rl/rl_batch.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct ModelState {
  learner::TrainingModel& model;
  learner::Optimizer& optimizer;
  const learner::TrainingModel* reference = nullptr;  // the KL term's model; null without one
  int64_t step = 0;     // the optimizer step about to be taken (0-based: picks the learning rate)
  int64_t version = 0;  // the weights version now (the batch's lag is measured against it)
};

struct RlStepResult {
  learner::ObjectiveStats objective;
  learner::StepReport optimizer;          // default (not applied) when the step had no signal
  learner::MismatchMetrics mismatch;      // learner vs rollout log-probs on trained tokens
  // False when every group had equal rewards and there is no KL term: nothing
  // to learn, and an AdamW step on zero gradients would still move the weights
  // by its momentum, so none is taken (the version still advances).
  bool signal = false;
  nlohmann::json trained_ids = nlohmann::json::array();
  int64_t groups = 0, downweighted = 0, tokens = 0, reward_n = 0, lag_n = 0;
  double reward_sum = 0, lag_sum = 0, lag_max = 0;
};

RlStepResult rl_step(const Batch& batch, const JobSpec& spec, const ModelState& state);

}  // namespace interlace::rl
