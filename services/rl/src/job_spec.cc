#include "interlace/rl/job_spec.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "interlace/core/file_util.h"
#include "interlace/model/precision.h"
#include "interlace/rollout/speculative.h"
#include "interlace/rollout/environment.h"
#include "interlace/transport/nccl_weights.h"
#include "spec_section.h"

namespace interlace::rl {
namespace {
using spec::Section;

absl::Status check_precision(const std::string& s) { return model::parse_precision(s).status(); }
absl::Status check_speculate(const std::string& s) { return rollout::parse_speculate(s).status(); }
absl::Status check_env(const std::string& s) { return rollout::make_environment(s).status(); }
absl::Status check_weights_transport(const std::string& s) {
  if (s == "nccl" && !transport::nccl::built_with_nccl())
    return absl::InvalidArgumentError(
        "'nccl' needs a build with CUDA and NCCL (this one was configured without: nvcc, or nccl.h and libnccl, not "
        "found); use 'zeromq'");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobSpec> parse_job_spec(const std::string& text, const std::string& source) {
  auto loaded = spec::load_mapping(text, source);
  if (!loaded.ok()) return loaded.status();
  const YAML::Node& root = *loaded;
  JobSpec j;
  std::string loss = "", advantage = "grpo", aggregation = "token-mean", correction = "none", schedule = "constant";
  std::string mode = "async", stale_policy = "drop", weights_transport = "zeromq";
  bool normalize_std = true;
  Section top(source, "", root);
  top.text("name", j.name)
      .num("seed", j.seed, 0, 1e18)
      .text("env", j.env, {}, check_env)
      .section("model",
               [&](Section& s) {
                 s.text("path", j.model_dir).text("init", j.model_init).num("seed", j.model_seed, 0, 1e18);
               })
      .section("sft",
               [&](Section& s) {
                 j.sft = true;
                 s.boolean("enabled", j.sft)
                     .num("demos", j.sft_demos, 1, 1e7)
                     .num("steps", j.sft_steps, 1, 1e7)
                     .num("batch_size", j.sft_batch_size, 1, 1e5)
                     .num("warmup_steps", j.sft_warmup_steps, 0, 1e7)
                     .num("lr", j.sft_lr, 0, 10)
                     .text("schedule", j.sft_schedule, {"constant", "cosine"})
                     .num("expect_greedy_reward", j.sft_expect_greedy_reward, 0, 1)
                     .num("check_every", j.sft_check_every, 0, 1e7);
               })
      .section("algorithm",
               [&](Section& s) {
                 s.text("name", j.algorithm, {"grpo", "cispo", "gspo", "ppo"})
                     .text("loss", loss, {"ppo", "cispo", "gspo"})
                     .text("advantage", advantage, {"grpo", "rloo", "reinforce"})
                     .boolean("normalize_std", normalize_std)
                     .text("aggregation", aggregation, {"token-mean", "seq-mean-token-sum", "seq-mean-token-mean"})
                     .num("eps_low", j.objective.eps_low, 0, 10)
                     .num("eps_high", j.objective.eps_high, 0, 10)
                     .num("kl_coef", j.objective.kl_coef, 0, 100)
                     .text("rollout_correction", correction, {"none", "tis", "mis"})
                     .num("correction_cap", j.objective.correction_cap, 1, 1e6)
                     .num("lr", j.optimizer.lr, 0, 10)
                     .num("weight_decay", j.optimizer.weight_decay, 0, 10)
                     .num("max_grad_norm", j.optimizer.max_grad_norm, 0, 1e9)
                     .num("warmup_steps", j.optimizer.warmup_steps, 0, 1e7)
                     .text("schedule", schedule, {"constant", "cosine"})
                     .num("beta1", j.optimizer.beta1, 0, 1)
                     .num("beta2", j.optimizer.beta2, 0, 1)
                     .num("steps", j.steps, 1, 1e7)
                     .num("groups_per_step", j.groups_per_step, 1, 1e5)
                     .num("group_size", j.group_size, 1, 4096);
               })
      .section("rollout",
               [&](Section& s) {
                 s.num("workers", j.workers, 0, 64)
                     .num("min_workers", j.min_workers, 1, 64)
                     .num("max_running", j.max_running, 1, 4096)
                     .num("temperature", j.temperature, 0, 100)
                     .num("top_p", j.top_p, 0, 1)
                     .num("top_k", j.top_k, 0, 1e6)
                     .num("max_turns", j.max_turns, 1, 1000)
                     .num("max_turn_tokens", j.max_turn_tokens, 1, 1e6)
                     .num("max_episode_tokens", j.max_episode_tokens, 1, 1e7)
                     .text("precision", j.rollout_precision, {}, check_precision)
                     .text("speculate", j.speculate, {}, check_speculate)
                     .boolean("cache", j.cache)
                     .num("cache_bytes", j.cache_bytes, 0, 1e13)
                     .num("cache_blocks", j.cache_blocks, 0, 1e8)
                     .num("cache_states", j.cache_states, 0, 1e7)
                     .num("max_in_flight", j.max_in_flight, 1, 1e6)
                     .num("resend_after_seconds", j.resend_after_s, 0.01, 1e6)
                     .num("task_timeout_seconds", j.task_timeout_s, 0.1, 1e7);
               })
      .section("learner", [&](Section& s) { s.text("precision", j.learner_precision, {}, check_precision); })
      .section("staleness",
               [&](Section& s) {
                 s.text("mode", mode, {"sync", "async"})
                     .num("eta", j.eta, 0, 1000)
                     .text("policy", stale_policy, {"drop", "downweight"})
                     .num("weight", j.stale_weight, 0, 1);
               })
      .section("weights", [&](Section& s) { s.text("transport", weights_transport, {"zeromq", "nccl"}, check_weights_transport); })
      .section("watchdog",
               [&](Section& s) {
                 s.num("factor", j.watchdog_factor, 1, 1e6)
                     .num("min_seconds", j.watchdog_min_s, 0.1, 1e7)
                     .boolean("exit", j.watchdog_exit);
               })
      .num("checkpoint_every", j.checkpoint_every, 0, 1e7)
      .num("spool_compact_bytes", j.spool_compact_bytes, 0, 1e15)
      .section("eval", [&](Section& s) { s.num("prompts", j.eval_prompts, 0, 1e6).num("samples", j.eval_samples, 0, 1024); });
  if (absl::Status s = top.finish(); !s.ok()) return s;
  if (j.model_dir.empty() == j.model_init.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": model: give exactly one of 'path' (a model directory) or 'init' (a config JSON, e.g. "
                             "examples/models/tiny-hybrid.json)"));
  if (j.sft_check_every > 0 && (j.sft_expect_greedy_reward <= 0 || j.eval_prompts <= 0))
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": sft.check_every: a checked warm-up stops at sft.expect_greedy_reward on eval.prompts "
                             "validation tasks; set both above 0, or check_every to 0"));
  // The name ends up in paths and on the wire: a safe set, no "." or "..".
  const bool safe_name = !j.name.empty() && j.name.size() <= 64 && j.name[0] != '.' &&
                         j.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
                             std::string::npos;
  if (!safe_name)
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": name: '", j.name,
        "' is not allowed; use 1-64 letters, digits, '.', '_' or '-', not starting with '.' (e.g. calculator-grpo)"));
  // The algorithm picks the loss unless `loss` says otherwise.
  if (loss.empty()) loss = j.algorithm == "grpo" ? "ppo" : j.algorithm;
  j.mode = mode == "sync" ? StalenessMode::kSync : StalenessMode::kAsync;
  j.stale_policy = stale_policy == "downweight" ? StalePolicy::kDownweight : StalePolicy::kDrop;
  j.weights_transport = weights_transport == "nccl" ? WeightsTransport::kNccl : WeightsTransport::kZeroMq;
  j.objective.loss = *learner::parse_policy_loss(loss);
  j.objective.aggregation = *learner::parse_aggregation(aggregation);
  j.objective.correction = *learner::parse_rollout_correction(correction);
  j.advantage.estimator = *learner::parse_advantage_estimator(advantage);
  j.advantage.normalize_std = normalize_std;
  j.optimizer.schedule =
      schedule == "cosine" ? learner::LrSchedule::kCosine : learner::LrSchedule::kConstant;
  j.optimizer.total_steps = j.steps;
  return j;
}

const char* staleness_mode_name(StalenessMode m) { return m == StalenessMode::kSync ? "sync" : "async"; }
const char* stale_policy_name(StalePolicy p) { return p == StalePolicy::kDownweight ? "downweight" : "drop"; }
const char* weights_transport_name(WeightsTransport t) { return t == WeightsTransport::kNccl ? "nccl" : "zeromq"; }

absl::StatusOr<JobSpec> load_job_spec(const std::string& path) {
  auto text = core::read_file(path);
  if (!text.ok()) return text.status();
  auto spec = parse_job_spec(*text, path);
  if (!spec.ok()) return spec;
  // Relative model paths are relative to the spec's own directory.
  namespace fs = std::filesystem;
  const fs::path base = fs::absolute(path).parent_path();
  for (std::string* p : {&spec->model_dir, &spec->model_init})
    if (!p->empty() && fs::path(*p).is_relative()) *p = (base / *p).lexically_normal().string();
  return spec;
}

namespace {
// Names as the spec spells them (parse_job_spec's inverse), for config.json.
const char* name_of(learner::PolicyLoss l) {
  return l == learner::PolicyLoss::kPpo ? "ppo" : l == learner::PolicyLoss::kCispo ? "cispo" : "gspo";
}
const char* name_of(learner::AdvantageEstimator e) {
  return e == learner::AdvantageEstimator::kGrpo ? "grpo" : e == learner::AdvantageEstimator::kRloo ? "rloo" : "reinforce";
}
const char* name_of(learner::Aggregation a) {
  return a == learner::Aggregation::kTokenMean          ? "token-mean"
         : a == learner::Aggregation::kSeqMeanTokenSum ? "seq-mean-token-sum"
                                                        : "seq-mean-token-mean";
}
const char* name_of(learner::RolloutCorrection c) {
  return c == learner::RolloutCorrection::kNone ? "none" : c == learner::RolloutCorrection::kTis ? "tis" : "mis";
}
}  // namespace

nlohmann::json job_spec_json(const JobSpec& j) {
  return {{"name", j.name},
          {"seed", j.seed},
          {"env", j.env},
          {"model", {{"path", j.model_dir}, {"init", j.model_init}, {"seed", j.model_seed}}},
          {"sft",
           {{"enabled", j.sft}, {"demos", j.sft_demos}, {"steps", j.sft_steps}, {"batch_size", j.sft_batch_size},
            {"warmup_steps", j.sft_warmup_steps}, {"lr", j.sft_lr}, {"schedule", j.sft_schedule},
            {"expect_greedy_reward", j.sft_expect_greedy_reward}, {"check_every", j.sft_check_every}}},
          {"algorithm",
           {{"name", j.algorithm}, {"loss", name_of(j.objective.loss)},
            {"advantage", name_of(j.advantage.estimator)}, {"aggregation", name_of(j.objective.aggregation)},
            {"rollout_correction", name_of(j.objective.correction)},
            {"schedule", j.optimizer.schedule == learner::LrSchedule::kCosine ? "cosine" : "constant"},
            {"beta1", j.optimizer.beta1}, {"beta2", j.optimizer.beta2}, {"eps_low", j.objective.eps_low}, {"eps_high", j.objective.eps_high},
            {"kl_coef", j.objective.kl_coef}, {"correction_cap", j.objective.correction_cap},
            {"lr", j.optimizer.lr}, {"weight_decay", j.optimizer.weight_decay},
            {"max_grad_norm", j.optimizer.max_grad_norm}, {"warmup_steps", j.optimizer.warmup_steps},
            {"steps", j.steps}, {"groups_per_step", j.groups_per_step}, {"group_size", j.group_size},
            {"normalize_std", j.advantage.normalize_std}}},
          {"rollout",
           {{"workers", j.workers}, {"min_workers", j.min_workers}, {"max_running", j.max_running}, {"temperature", j.temperature},
            {"top_p", j.top_p}, {"top_k", j.top_k}, {"max_turns", j.max_turns},
            {"max_turn_tokens", j.max_turn_tokens}, {"max_episode_tokens", j.max_episode_tokens},
            {"precision", j.rollout_precision}, {"speculate", j.speculate}, {"cache", j.cache}, {"cache_bytes", j.cache_bytes}, {"cache_blocks", j.cache_blocks},
            {"cache_states", j.cache_states}, {"max_in_flight", j.max_in_flight},
            {"resend_after_seconds", j.resend_after_s}, {"task_timeout_seconds", j.task_timeout_s}}},
          {"learner", {{"precision", j.learner_precision}}},
          {"staleness",
           {{"mode", staleness_mode_name(j.mode)}, {"eta", j.eta}, {"policy", stale_policy_name(j.stale_policy)},
            {"weight", j.stale_weight}}},
          {"weights", {{"transport", weights_transport_name(j.weights_transport)}}},
          {"watchdog", {{"factor", j.watchdog_factor}, {"min_seconds", j.watchdog_min_s}, {"exit", j.watchdog_exit}}},
          {"checkpoint_every", j.checkpoint_every},
          {"spool_compact_bytes", j.spool_compact_bytes},
          {"eval", {{"prompts", j.eval_prompts}, {"samples", j.eval_samples}}}};
}

}  // namespace interlace::rl
