// interlace precision check: how far rollout log-probs (incremental decode under
// one precision profile) are from the learner's (whole-sequence forward under
// another), on the same tokens.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/learner/checkpoint.h"
#include "interlace/learner/precision_metrics.h"
#include "interlace/model/model.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

struct CheckArgs {
  std::string model, data, rollout = "bf16", train = "fp32", output = "table";
  bool breakdown = false;
};

// The rollout profile with only one of its storage places kept (the others
// fp32): how much of the mismatch that place alone causes.
std::vector<std::pair<std::string, model::PrecisionProfile>> components(const model::PrecisionProfile& p) {
  std::vector<std::pair<std::string, model::PrecisionProfile>> out;
  auto only = [&](const char* name, core::DType model::PrecisionProfile::*field) {
    if (p.*field == core::DType::kF32) return;
    model::PrecisionProfile q;
    q.name = std::string(name) + "-only";
    q.*field = p.*field;
    out.push_back({name, q});
  };
  only("weights", &model::PrecisionProfile::weights);
  only("activations", &model::PrecisionProfile::activations);
  only("kv", &model::PrecisionProfile::kv_cache);
  only("state", &model::PrecisionProfile::state);
  only("head", &model::PrecisionProfile::lm_head);
  return out;
}

learner::MismatchMetrics measure(const std::string& dir, const model::PrecisionProfile& rollout_precision,
                                 const learner::TrainingModel& train, const std::vector<std::vector<int32_t>>& rows,
                                 absl::Status* status) {
  learner::MismatchAccumulator acc;
  auto rollout = model::Model::load(dir, rollout_precision);
  if (!rollout.ok()) {
    *status = rollout.status();
    return acc.metrics();
  }
  for (const std::vector<int32_t>& tokens : rows)
    acc.add((*rollout)->score(tokens, model::ScorePath::kDecode), train.logprobs(tokens));
  return acc.metrics();
}

int run_check(const CheckArgs& a) {
  auto rp = model::parse_precision(a.rollout);
  if (!rp.ok()) return fail(absl::StrCat("--rollout-precision: ", rp.status().message()));
  auto tp = model::parse_precision(a.train);
  if (!tp.ok()) return fail(absl::StrCat("--train-precision: ", tp.status().message()));
  auto train = learner::load_training_model(a.model);
  if (!train.ok()) return fail(train.status());
  (*train)->set_precision(*tp);
  auto rows = read_token_file(a.data, (*train)->config().vocab_size);
  if (!rows.ok()) return fail(rows.status());
  absl::Status status;
  const learner::MismatchMetrics m = measure(a.model, *rp, **train, *rows, &status);
  if (!status.ok()) return fail(status);
  const int64_t sequences = static_cast<int64_t>(rows->size());
  nlohmann::json doc = learner::to_json(m);
  if (a.breakdown) {
    nlohmann::json parts = nlohmann::json::object();
    for (const auto& [name, profile] : components(*rp)) {
      std::fprintf(stderr, "precision check: %s alone...\n", name.c_str());
      parts[name] = learner::to_json(measure(a.model, profile, **train, *rows, &status));
      if (!status.ok()) return fail(status);
    }
    doc["breakdown"] = parts;
  }
  doc["sequences"] = sequences;
  doc["rollout_precision"] = rp->describe();
  doc["train_precision"] = tp->describe();
  doc["rollout_path"] = "decode";
  doc["train_path"] = "training forward";
  if (a.output == "json") {
    std::printf("%s\n", doc.dump(2).c_str());
    return 0;
  }
  std::printf("rollout: %s, incremental decode\ntrain:   %s, the learner's training forward\n", rp->describe().c_str(),
              tp->describe().c_str());
  std::printf("%lld tokens in %lld sequences\n", static_cast<long long>(m.tokens), static_cast<long long>(sequences));
  for (const char* k : {"logprob_abs_diff_mean", "logprob_abs_diff_max", "prob_abs_diff_mean", "prob_abs_diff_max",
                        "mismatch_k3_kl", "prob_pearson", "token_mult_prob_error"})
    std::printf("  %-24s %.6g\n", k, doc[k].get<double>());
  if (doc.contains("breakdown")) {
    std::printf("\nrollout profile's places one at a time (the rest fp32):\n  %-12s %14s %14s %14s\n", "place",
                "prob_pearson", "|dlogp| mean", "k3 KL");
    for (const auto& [name, part] : doc["breakdown"].items())
      std::printf("  %-12s %14.8f %14.6g %14.6g\n", name.c_str(), part["prob_pearson"].get<double>(),
                  part["logprob_abs_diff_mean"].get<double>(), part["mismatch_k3_kl"].get<double>());
  }
  return 0;
}

}  // namespace

void add_precision_commands(CLI::App& app, Action& action) {
  CLI::App* precision = app.add_subcommand("precision", "Rollout/trainer numerical consistency");
  precision->require_subcommand(1);
  auto args = std::make_shared<CheckArgs>();
  CLI::App* check = precision->add_subcommand(
      "check", "Score the same tokens with the decode path under the rollout profile and the\n"
               "whole-sequence forward under the training profile; report how far apart the\n"
               "log-probabilities are (mean/max |dlogp|, |dp|, k3 KL, probability correlation,\n"
               "mean exp(|dlogp|)). --breakdown also runs the rollout profile's storage places\n"
               "(weights, activations, kv, state, head) one at a time to show what each costs.\n"
               "Per-layer-kind contributions are not reported yet.");
  check->add_option("--model", args->model, "model directory")->required();
  check->add_option("--data", args->data, "JSONL of {\"tokens\": [...]}")->required();
  check->add_option("--rollout-precision", args->rollout, "profile of the rollout side")->capture_default_str();
  check->add_option("--train-precision", args->train, "profile of the training side")->capture_default_str();
  check->add_flag("--breakdown", args->breakdown, "also measure each place of the rollout profile alone");
  check->add_option("-o,--output", args->output, "table or json")
      ->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  check->callback([&action, args] { action = [args] { return run_check(*args); }; });
}

}  // namespace interlace::cli
