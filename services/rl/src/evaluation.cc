#include "interlace/rl/evaluation.h"

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/supervisor.h"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;

// `samples` 0: one greedy episode per task; else that many per task at the
// rollout temperature.
Evaluation evaluate(const JobSpec& spec, const std::string& interlace, const std::string& model_dir,
                    const std::string& out, int64_t samples) {
  Evaluation e;
  if (spec.eval_prompts <= 0) return e;
  if (!fs::exists(out)) {
    const bool greedy = samples == 0;
    const int rc = run_process({interlace, "rollout", "--model", model_dir, "--env", spec.env, "--eval", "--prompts",
                                std::to_string(spec.eval_prompts), "--group-size", std::to_string(greedy ? 1 : samples),
                                "--temperature", greedy ? std::string("0") : absl::StrCat(spec.temperature), "--top-p",
                                greedy ? std::string("1") : absl::StrCat(spec.top_p), "--seed",
                                std::to_string(spec.seed), "--max-turns", std::to_string(spec.max_turns),
                                "--max-new-tokens", std::to_string(spec.max_turn_tokens), "--max-episode-tokens",
                                std::to_string(spec.max_episode_tokens), "--precision", spec.rollout_precision, "--out",
                                out + ".tmp"});
    if (rc != 0) return e;
    fs::rename(out + ".tmp", out);
  }
  double sum = 0;
  e.rows = read_jsonl(out);
  for (const nlohmann::json& j : e.rows) {
    sum += j.value("reward", 0.0);
    ++e.episodes;
  }
  e.ran = e.episodes > 0;
  e.mean_reward = e.ran ? sum / double(e.episodes) : NAN;
  return e;
}

}  // namespace

Evaluations evaluate_model(const JobSpec& spec, const std::string& interlace, const std::string& model_dir,
                           const std::string& run_dir, const std::string& stem, const char* which, bool quiet) {
  if (!quiet && spec.eval_prompts > 0) {
    std::string sampled;
    if (spec.eval_samples > 0)
      sampled = absl::StrCat(", then ", spec.eval_prompts * spec.eval_samples, " sampled at temperature ",
                             spec.temperature);
    std::fprintf(stderr, "run: held-out evaluation of the %s model (%lld greedy episodes%s)\n", which,
                 static_cast<long long>(spec.eval_prompts), sampled.c_str());
  }
  Evaluations e;
  e.greedy = evaluate(spec, interlace, model_dir, run_path(run_dir, stem + ".jsonl"), 0);
  if (spec.eval_samples > 0)
    e.sampled = evaluate(spec, interlace, model_dir, run_path(run_dir, stem + "-sampled.jsonl"), spec.eval_samples);
  return e;
}

}  // namespace interlace::rl
