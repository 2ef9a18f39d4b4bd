// interlace train sft: supervised fine-tuning of a model directory on JSONL
// token data, writing the trained model in the same (Hugging Face) layout.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/learner/checkpoint.h"
#include "interlace/learner/optimizer.h"
#include "interlace/learner/sft.h"
#include "interlace/model/precision.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

struct SftArgs {
  std::string model, data, out, optimizer = "adamw", schedule = "constant", precision = "fp32", resume;
  int64_t steps = 100, batch_size = 0, warmup_steps = 0, checkpoint_every = 0;
  double lr = 1e-3, weight_decay = 0.0, max_grad_norm = 1.0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  uint64_t seed = 0;
  bool quiet = false;
};

std::string format_seconds(double s) {
  if (!std::isfinite(s)) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrCat(t / 3600, "h", (t % 3600) / 60, "m");
  if (t >= 60) return absl::StrCat(t / 60, "m", t % 60, "s");
  return absl::StrCat(t, "s");
}

int run_sft(const SftArgs& a) {
  using Clock = std::chrono::steady_clock;
  auto precision = model::parse_precision(a.precision);
  if (!precision.ok()) return fail(absl::StrCat("--precision: ", precision.status().message()));
  learner::OptimizerConfig oc;
  {
    auto kind = learner::parse_optimizer_kind(a.optimizer);
    if (!kind.ok()) return fail(absl::StrCat("--optimizer: ", kind.status().message()));
    auto schedule = learner::parse_lr_schedule(a.schedule);
    if (!schedule.ok()) return fail(absl::StrCat("--schedule: ", schedule.status().message()));
    oc.kind = *kind;
    oc.schedule = *schedule;
  }
  oc.lr = a.lr;
  oc.beta1 = a.beta1;
  oc.beta2 = a.beta2;
  oc.eps = a.eps;
  oc.weight_decay = a.weight_decay;
  oc.max_grad_norm = a.max_grad_norm;
  oc.warmup_steps = a.warmup_steps;
  oc.total_steps = a.steps;

  const std::string source = a.resume.empty() ? a.model : a.resume;
  auto model = learner::load_training_model(source);
  if (!model.ok()) return fail(model.status());
  (*model)->set_precision(*precision);
  auto data = learner::read_sft_file(a.data, (*model)->config().vocab_size);
  if (!data.ok()) return fail(data.status());
  const int64_t n = static_cast<int64_t>(data->size());
  learner::Optimizer optimizer(oc, (*model)->weights());
  learner::BatchSampler sampler(n, a.batch_size, a.seed);
  learner::TrainerState state;
  if (!a.resume.empty()) {
    auto restored = learner::load_checkpoint(a.resume, optimizer);
    if (!restored.ok()) return fail(restored.status());
    state = *restored;
    if (absl::Status s = sampler.restore(state.extra.value("sampler", nlohmann::json())); !s.ok())
      return fail(absl::StrCat(a.resume, ": ", s.message()));
    std::printf("resumed from %s at step %lld\n", a.resume.c_str(), static_cast<long long>(state.step));
  }
  if (!a.quiet)
    std::printf("sft: %lld examples, batch %lld, %lld steps, %s lr %g, precision %s\n", static_cast<long long>(n),
                static_cast<long long>(a.batch_size > 0 ? a.batch_size : n), static_cast<long long>(a.steps),
                a.optimizer.c_str(), a.lr, precision->describe().c_str());

  const auto t0 = Clock::now();
  auto last_print = t0;
  int64_t tokens_done = 0, start_step = state.step;
  double last_loss = NAN;
  while (state.step < a.steps) {
    std::vector<const learner::SftExample*> batch;
    for (int64_t i : sampler.next()) batch.push_back(&(*data)[i]);
    model::NamedTensors grads = (*model)->zero_grads();
    const learner::SftBatchStats stats = learner::sft_accumulate(**model, batch, grads);
    const learner::StepReport rep = optimizer.step((*model)->weights(), grads, state.step);
    (*model)->weights_changed();
    ++state.step;
    if (rep.applied) ++state.version;
    tokens_done += stats.tokens;
    last_loss = stats.loss;
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    const bool last = state.step == a.steps;
    if (!rep.applied)
      std::fprintf(stderr, "step %lld: gradients hold NaN or Inf, step skipped (%lld skipped so far)\n",
                   static_cast<long long>(state.step), static_cast<long long>(optimizer.skipped_steps()));
    if (!a.quiet && (last || state.step - start_step <= 3 || now - last_print >= std::chrono::seconds(1))) {
      const double per_step = elapsed / double(state.step - start_step);
      std::printf("step %lld/%lld  loss %.4f  grad_norm %.3g  lr %.3g  %.0f tok/s  ETA %s\n",
                  static_cast<long long>(state.step), static_cast<long long>(a.steps), stats.loss, rep.grad_norm,
                  rep.lr, double(tokens_done) / elapsed, format_seconds(per_step * double(a.steps - state.step)).c_str());
      std::fflush(stdout);
      last_print = now;
    }
    if (a.checkpoint_every > 0 && (state.step % a.checkpoint_every == 0 || last)) {
      state.extra["sampler"] = sampler.state();
      const std::string dir =
          (std::filesystem::path(a.out) / "checkpoints" / absl::StrCat("step-", state.step)).string();
      if (absl::Status s = learner::save_checkpoint(dir, **model, optimizer, state, source); !s.ok()) return fail(s);
    }
  }
  if (absl::Status s = learner::save_model(a.out, **model, source); !s.ok()) return fail(s);
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("done: %lld steps (%lld skipped for NaN/Inf gradients), final loss %.4f, %.0f tok/s; model written to %s\n",
              static_cast<long long>(state.step), static_cast<long long>(optimizer.skipped_steps()), last_loss,
              elapsed > 0 ? double(tokens_done) / elapsed : 0.0, a.out.c_str());
  return 0;
}

}  // namespace

void add_train_commands(CLI::App& app, Action& action) {
  CLI::App* train = app.add_subcommand("train", "Train a model");
  train->require_subcommand(1);
  auto a = std::make_shared<SftArgs>();
  CLI::App* sft = train->add_subcommand(
      "sft",
      "Supervised fine-tuning on token data. Each line of --data is\n"
      "  {\"tokens\": [ids...], \"loss_mask\": [0|1 per token]}\n"
      "and the loss of a batch is the summed NLL of the masked tokens divided by their\n"
      "number. Writes the trained model (fp32, Hugging Face layout) to --out.\n\n"
      "Example:\n"
      "  interlace model init --config examples/models/tiny-hybrid.json --out /tmp/tiny\n"
      "  interlace train sft --model /tmp/tiny --data demos.jsonl --out /tmp/tiny-sft --steps 50 --batch-size 8");
  sft->add_option("--model", a->model, "model directory to start from")->required();
  sft->add_option("--data", a->data, "JSONL training data")->required();
  sft->add_option("--out", a->out, "directory the trained model is written to")->required();
  sft->add_option("--steps", a->steps, "optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  sft->add_option("--batch-size", a->batch_size, "sequences per step; 0 takes the whole file as one batch")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sft->add_option("--optimizer", a->optimizer, "adamw or sgd")->capture_default_str();
  sft->add_option("--lr", a->lr, "peak learning rate")->capture_default_str()->check(CLI::NonNegativeNumber);
  sft->add_option("--schedule", a->schedule, "after warm-up: constant or cosine (to 0 at the last step)")
      ->capture_default_str();
  sft->add_option("--warmup-steps", a->warmup_steps, "linear learning-rate warm-up")->capture_default_str();
  sft->add_option("--weight-decay", a->weight_decay, "decay of matrices (not norms or biases)")->capture_default_str();
  sft->add_option("--max-grad-norm", a->max_grad_norm, "global-norm clipping; 0 disables")->capture_default_str();
  sft->add_option("--beta1", a->beta1, "AdamW first-moment decay")->capture_default_str();
  sft->add_option("--beta2", a->beta2, "AdamW second-moment decay (MiniMax-M1: 0.95)")->capture_default_str();
  sft->add_option("--eps", a->eps, "AdamW epsilon (MiniMax-M1: 1e-15)")->capture_default_str();
  sft->add_option("--precision", a->precision,
                  absl::StrCat("training forward precision profile: ",
                               absl::StrJoin(model::precision_profile_names(), ", "), " or a custom spec"))
      ->capture_default_str();
  sft->add_option("--seed", a->seed, "seed of the batch order")->capture_default_str();
  sft->add_option("--checkpoint-every", a->checkpoint_every,
                  "write OUT/checkpoints/step-N (model, optimizer, data order) every N steps; 0: never")
      ->capture_default_str();
  sft->add_option("--resume", a->resume, "continue from a checkpoint directory written by --checkpoint-every");
  sft->add_flag("--quiet", a->quiet, "no progress output");
  sft->callback([&action, a] { action = [a] { return run_sft(*a); }; });
}

}  // namespace interlace::cli
