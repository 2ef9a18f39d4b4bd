#include "interlace/rl/rollout_job_spec.h"

#include "absl/strings/str_cat.h"
#include "interlace/model/precision.h"
#include "interlace/rollout/environment.h"
#include "spec_section.h"

namespace interlace::rl {

absl::StatusOr<RolloutJobSpec> parse_rollout_job_spec(const std::string& text, const std::string& source) {
  auto loaded = spec::load_mapping(text, source);
  if (!loaded.ok()) return loaded.status();
  RolloutJobSpec r;
  auto check_env = [](const std::string& s) { return rollout::make_environment(s).status(); };
  auto check_precision = [](const std::string& s) { return model::parse_precision(s).status(); };
  auto check_job_id = [](const std::string& s) {
    return s.size() <= 64 && !s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
                                               std::string::npos
               ? absl::OkStatus()
               : absl::InvalidArgumentError("expected a job id such as job-3");
  };
  spec::Section top(source, "", *loaded);
  top.text("name", r.name)
      .text("model", r.model)
      .text("from_job", r.from_job, {}, check_job_id)
      .text("env", r.env, {}, check_env)
      .num("prompts", r.prompts, 1, 1e6)
      .num("group_size", r.group_size, 1, 1024)
      .num("max_turns", r.max_turns, 1, 64)
      .num("max_new_tokens", r.max_new_tokens, 1, 1 << 20)
      .num("max_episode_tokens", r.max_episode_tokens, 1, 1 << 24)
      .num("temperature", r.temperature, 0, 100)
      .num("top_p", r.top_p, 1e-6, 1)
      .num("top_k", r.top_k, 0, 1 << 20)
      .num("seed", r.seed, 0, 1e18)
      .boolean("eval", r.eval)
      .text("precision", r.precision, {}, check_precision);
  if (absl::Status s = top.finish(); !s.ok()) return s;
  if (r.model.empty() == r.from_job.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": name the model with exactly one of 'model: DIR' (a model directory) or 'from_job: ID' (a train job's final model)"));
  return r;
}

std::vector<std::string> rollout_command(const RolloutJobSpec& s, const std::string& interlace,
                                         const std::string& model_dir, const std::string& out) {
  std::vector<std::string> args = {interlace,
                                   "rollout",
                                   "--model", model_dir,
                                   "--env", s.env,
                                   "--out", out,
                                   "--prompts", std::to_string(s.prompts),
                                   "--group-size", std::to_string(s.group_size),
                                   "--max-turns", std::to_string(s.max_turns),
                                   "--max-new-tokens", std::to_string(s.max_new_tokens),
                                   "--max-episode-tokens", std::to_string(s.max_episode_tokens),
                                   "--temperature", absl::StrCat(s.temperature),
                                   "--top-p", absl::StrCat(s.top_p),
                                   "--top-k", std::to_string(s.top_k),
                                   "--seed", std::to_string(s.seed),
                                   "--precision", s.precision};
  if (s.eval) args.push_back("--eval");
  return args;
}

}  // namespace interlace::rl
