#include "interlace/learner/sft_trainer.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/learner/checkpoint.h"
#include "interlace/learner/sft.h"

namespace interlace::learner {

absl::StatusOr<SftResult> train_sft(const SftOptions& o, const SftCallbacks& callbacks) {
  using Clock = std::chrono::steady_clock;
  OptimizerConfig oc = o.optimizer;
  oc.total_steps = o.steps;
  const std::string source = o.resume.empty() ? o.model : o.resume;
  auto model = load_training_model(source);
  if (!model.ok()) return model.status();
  (*model)->set_precision(o.precision);
  auto data = read_sft_file(o.data, (*model)->config().vocab_size);
  if (!data.ok()) return data.status();
  const int64_t n = static_cast<int64_t>(data->size());
  Optimizer optimizer(oc, (*model)->weights());
  BatchSampler sampler(n, o.batch_size, o.seed);
  TrainerState state;
  SftStarted started{.examples = n, .batch_size = o.batch_size > 0 ? o.batch_size : n};
  if (!o.resume.empty()) {
    auto restored = load_checkpoint(o.resume, optimizer);
    if (!restored.ok()) return restored.status();
    state = *restored;
    if (absl::Status s = sampler.restore(state.extra.value("sampler", nlohmann::json())); !s.ok())
      return absl::InvalidArgumentError(absl::StrCat(o.resume, ": ", s.message()));
    started.resumed_at = state.step;
  }
  if (callbacks.started) callbacks.started(started);

  const auto t0 = Clock::now();
  SftResult result;
  SftProgress p{.steps = o.steps, .first_step = state.step};
  p.loss = NAN;  // no step run (a resume at the last step)
  const int64_t last = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  while (state.step < last) {
    std::vector<const SftExample*> batch;
    for (int64_t i : sampler.next()) batch.push_back(&(*data)[i]);
    model::NamedTensors grads = (*model)->zero_grads();
    const SftBatchStats stats = sft_accumulate(**model, batch, grads);
    const StepReport rep = optimizer.step((*model)->weights(), grads, state.step);
    (*model)->weights_changed();
    ++state.step;
    if (rep.applied) ++state.version;
    p.step = state.step;
    p.loss = stats.loss;
    p.grad_norm = rep.grad_norm;
    p.lr = rep.lr;
    p.applied = rep.applied;
    p.skipped = optimizer.skipped_steps();
    p.tokens += stats.tokens;
    p.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (callbacks.stepped) callbacks.stepped(p);
    if (o.checkpoint_every > 0 && (state.step % o.checkpoint_every == 0 || state.step == last)) {
      state.extra["sampler"] = sampler.state();
      const std::string dir = (std::filesystem::path(o.out) / "checkpoints" / absl::StrCat("step-", state.step)).string();
      if (absl::Status s = save_checkpoint(dir, **model, optimizer, state, source); !s.ok()) return s;
    }
  }
  if (absl::Status s = save_model(o.out, **model, source); !s.ok()) return s;
  result.steps = state.step;
  result.skipped = optimizer.skipped_steps();
  result.tokens = p.tokens;
  result.final_loss = p.loss;
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return result;
}

}  // namespace interlace::learner
