// Learner checkpoints. A checkpoint directory is a model directory in the
// Hugging Face layout (config.json, model.safetensors, tokenizer files), so any
// reader of models loads it, plus what resuming needs:
//   optimizer.safetensors  the optimizer's moments ("exp_avg.<name>", ...)
//   trainer_state.json     step, weights version, optimizer counters and the
//                          caller's own state (data order, RNG), as JSON
// Resuming from it takes exactly the step the uninterrupted run would have.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "interlace/kernels/backend.h"
#include "interlace/learner/optimizer.h"
#include "interlace/learner/training_model.h"
#include "nlohmann/json.hpp"

namespace interlace::learner {

// Loads a model directory into fp32 master weights, validating names and shapes.
absl::StatusOr<std::unique_ptr<TrainingModel>> load_training_model(const std::string& dir,
                                                                   kernels::Backend* backend = nullptr);

// Writes the weights (fp32) into `dir` as a model directory; config.json and the
// tokenizer files are copied from `source_dir` (the directory the model came from).
absl::Status save_model(const std::string& dir, const TrainingModel& model, const std::string& source_dir);

struct TrainerState {
  int64_t step = 0;     // optimizer steps attempted (applied + skipped)
  int64_t version = 0;  // weights version: bumps with every applied step
  nlohmann::json extra = nlohmann::json::object();  // the training loop's own state
};

// save_model + optimizer.safetensors + trainer_state.json; written to a
// temporary directory and renamed, so a crash never leaves half a checkpoint.
absl::Status save_checkpoint(const std::string& dir, const TrainingModel& model, const Optimizer& optimizer,
                             const TrainerState& state, const std::string& source_dir);
// Restores optimizer state and returns the trainer state; load the weights with
// load_training_model(dir) first. The optimizer must be configured like the
// one that wrote the checkpoint (same kind and parameters).
absl::StatusOr<TrainerState> load_checkpoint(const std::string& dir, Optimizer& optimizer);

}  // namespace interlace::learner
