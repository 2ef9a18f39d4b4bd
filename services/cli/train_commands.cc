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
#include "interlace/learner/sft_trainer.h"
#include "interlace/model/precision.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

struct SftArgs {
  std::string model, data, out, optimizer = "adamw", schedule = "constant", precision = "fp32", resume;
  int64_t steps = 100, batch_size = 0, warmup_steps = 0, checkpoint_every = 0, stop_at = 0;
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
  learner::SftOptions o{.model = a.model,
                        .resume = a.resume,
                        .data = a.data,
                        .out = a.out,
                        .optimizer = {},
                        .precision = *precision,
                        .steps = a.steps,
                        .batch_size = a.batch_size,
                        .seed = a.seed,
                        .checkpoint_every = a.checkpoint_every,
                        .stop_at = a.stop_at};
  {
    auto kind = learner::parse_optimizer_kind(a.optimizer);
    if (!kind.ok()) return fail(absl::StrCat("--optimizer: ", kind.status().message()));
    auto schedule = learner::parse_lr_schedule(a.schedule);
    if (!schedule.ok()) return fail(absl::StrCat("--schedule: ", schedule.status().message()));
    o.optimizer.kind = *kind;
    o.optimizer.schedule = *schedule;
  }
  o.optimizer.lr = a.lr;
  o.optimizer.beta1 = a.beta1;
  o.optimizer.beta2 = a.beta2;
  o.optimizer.eps = a.eps;
  o.optimizer.weight_decay = a.weight_decay;
  o.optimizer.max_grad_norm = a.max_grad_norm;
  o.optimizer.warmup_steps = a.warmup_steps;

  auto last_print = Clock::now();
  learner::SftCallbacks callbacks;
  callbacks.started = [&](const learner::SftStarted& s) {
    if (s.resumed_at >= 0)
      std::printf("resumed from %s at step %lld\n", a.resume.c_str(), static_cast<long long>(s.resumed_at));
    if (!a.quiet)
      std::printf("sft: %lld examples, batch %lld, %lld steps, %s lr %g, precision %s\n",
                  static_cast<long long>(s.examples), static_cast<long long>(s.batch_size),
                  static_cast<long long>(a.steps), a.optimizer.c_str(), a.lr, precision->describe().c_str());
  };
  callbacks.stepped = [&](const learner::SftProgress& p) {
    if (!p.applied)
      std::fprintf(stderr, "step %lld: gradients hold NaN or Inf, step skipped (%lld skipped so far)\n",
                   static_cast<long long>(p.step), static_cast<long long>(p.skipped));
    const auto now = Clock::now();
    if (!a.quiet && (p.step == p.steps || p.step - p.first_step <= 3 || now - last_print >= std::chrono::seconds(1))) {
      const double per_step = p.seconds / double(p.step - p.first_step);
      std::printf("step %lld/%lld  loss %.4f  grad_norm %.3g  lr %.3g  %.0f tok/s  ETA %s\n",
                  static_cast<long long>(p.step), static_cast<long long>(p.steps), p.loss, p.grad_norm, p.lr,
                  double(p.tokens) / p.seconds, format_seconds(per_step * double(p.steps - p.step)).c_str());
      std::fflush(stdout);
      last_print = now;
    }
  };
  auto r = learner::train_sft(o, callbacks);
  if (!r.ok()) return fail(r.status());
  std::printf("done: %lld steps (%lld skipped for NaN/Inf gradients), final loss %.4f, %.0f tok/s; model written to %s\n",
              static_cast<long long>(r->steps), static_cast<long long>(r->skipped), r->final_loss,
              r->seconds > 0 ? double(r->tokens) / r->seconds : 0.0, a.out.c_str());
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
  sft->add_option("--stop-at", a->stop_at,
                  "stop after this step, the schedule still spanning --steps (with --checkpoint-every, a checkpoint "
                  "is written there for --resume); 0: at --steps")
      ->check(CLI::NonNegativeNumber);
  sft->add_option("--resume", a->resume, "continue from a checkpoint directory written by --checkpoint-every");
  sft->add_flag("--quiet", a->quiet, "no progress output");
  sft->callback([&action, a] { action = [a] { return run_sft(*a); }; });
}

}  // namespace interlace::cli
