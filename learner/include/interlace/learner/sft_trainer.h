// The SFT training loop as a function: load a model directory (or resume a
// checkpoint), take seeded batches of a JSONL file, step the optimizer,
// checkpoint every N steps, write the trained model. The CLI (`interlace
// train sft`) and `interlace run`'s warm-up call it; progress goes to a
// callback, so the caller decides what to print.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/learner/optimizer.h"
#include "interlace/model/precision.h"

namespace interlace::learner {

struct SftOptions {
  std::string model;   // model directory to start from
  std::string resume;  // or a checkpoint (OUT/checkpoints/step-N) to continue ("": none)
  std::string data;    // JSONL: {"tokens": [...], "loss_mask": [...]}
  std::string out;     // the trained model goes here (Hugging Face layout)
  OptimizerConfig optimizer;  // total_steps is set to `steps`
  model::PrecisionProfile precision;
  int64_t steps = 100;
  int64_t batch_size = 0;        // 0: the whole file each step
  uint64_t seed = 0;             // of the batch order
  int64_t checkpoint_every = 0;  // 0: none (the final model is always written)
  // Stop after this step (0: `steps`); the learning-rate schedule still spans
  // `steps`, and with checkpoint_every a checkpoint is written here, so a
  // --resume carries on as if it had never stopped. `interlace run` trains
  // its warm-up in such pieces and checks the model between them.
  int64_t stop_at = 0;
};

struct SftStarted {
  int64_t examples = 0, batch_size = 0;
  int64_t resumed_at = -1;  // step of the checkpoint resumed from (-1: a fresh start)
};

struct SftProgress {
  int64_t step = 0, steps = 0, first_step = 0;  // first_step: where this run started (resumed or 0)
  double loss = 0, grad_norm = 0, lr = 0;
  bool applied = true;      // false: the gradients held NaN or Inf and the step was skipped
  int64_t skipped = 0;      // such steps so far
  int64_t tokens = 0;       // run through the model by this run so far
  double seconds = 0;       // this run's time so far
};

struct SftResult {
  int64_t steps = 0, skipped = 0, tokens = 0;
  double final_loss = 0, seconds = 0;
};

struct SftCallbacks {
  std::function<void(const SftStarted&)> started;
  std::function<void(const SftProgress&)> stepped;  // after every step
};

absl::StatusOr<SftResult> train_sft(const SftOptions& options, const SftCallbacks& callbacks = {});

}  // namespace interlace::learner
