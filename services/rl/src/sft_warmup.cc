#include "interlace/rl/sft_warmup.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "interlace/core/file_util.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/supervisor.h"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;

// Validation tasks: the training distribution, with a seed of their own (the
// demonstrations use seed + 1000003, the held-out evaluation the
// environment's eval seeds), so the stop rule never looks at held-out tasks.
uint64_t validation_seed(const JobSpec& spec) { return spec.seed + 3000017; }

// The newest OUT/checkpoints/step-N, and its N (0, "" if none).
std::pair<int64_t, std::string> last_checkpoint(const fs::path& out) {
  std::pair<int64_t, std::string> best{0, ""};
  std::error_code ec;
  const std::regex name("step-([0-9]+)");
  for (const auto& e : fs::directory_iterator(out / "checkpoints", ec)) {
    std::smatch m;
    const std::string f = e.path().filename().string();
    if (std::regex_match(f, m, name) && fs::exists(e.path() / "config.json") && std::stoll(m[1]) > best.first)
      best = {std::stoll(m[1]), e.path().string()};
  }
  return best;
}

// The greedy reward on the validation tasks of the model in `dir`, or an error.
absl::StatusOr<double> validation_reward(const JobSpec& spec, const WarmupOptions& o, const std::string& dir,
                                         const std::string& out) {
  const int rc = run_process({o.interlace, "rollout", "--model", dir, "--env", spec.env, "--prompts",
                              std::to_string(spec.eval_prompts), "--temperature", "0", "--seed",
                              std::to_string(validation_seed(spec)), "--max-turns", std::to_string(spec.max_turns),
                              "--max-new-tokens", std::to_string(spec.max_turn_tokens), "--max-episode-tokens",
                              std::to_string(spec.max_episode_tokens), "--precision", spec.rollout_precision, "--out",
                              out},
                             o.interrupted);
  if (rc != 0) return rc == 130 ? absl::CancelledError("interrupted during the SFT warm-up")
                                : absl::InternalError("SFT warm-up: the validation rollout failed (see above)");
  const auto rows = read_jsonl(out);
  if (rows.empty()) return absl::InternalError(absl::StrCat("SFT warm-up: no episodes in ", out));
  double sum = 0;
  for (const auto& r : rows) sum += r.value("reward", 0.0);
  return sum / double(rows.size());
}

// RUN/sft-timing.json: the seconds `train sft` ran and the steps it took,
// summed over a checked warm-up's pieces and a resume's (training speed
// without the demonstrations and validation rollouts around it).
void add_sft_timing(const std::string& run_dir, double seconds, int64_t steps) {
  const std::string path = run_path(run_dir, "sft-timing.json");
  nlohmann::json t = nlohmann::json::object();
  if (auto text = core::read_file(path); text.ok()) {
    t = nlohmann::json::parse(*text, nullptr, false);
    if (!t.is_object()) t = nlohmann::json::object();
  }
  const bool kept = t.contains("train_seconds") && t["train_seconds"].is_number() && t.contains("steps") &&
                    t["steps"].is_number_integer();
  t["train_seconds"] = (kept ? t["train_seconds"].get<double>() : 0.0) + seconds;
  t["steps"] = (kept ? t["steps"].get<int64_t>() : 0) + steps;
  (void)core::write_file(path, t.dump() + "\n");
}

}  // namespace

absl::StatusOr<std::string> run_sft_warmup(const JobSpec& spec, const WarmupOptions& o, const std::string& model,
                                           const std::string& run_dir) {
  const std::string sft_dir = run_path(run_dir, "sft-model");
  if (fs::exists(fs::path(sft_dir) / "config.json")) return sft_dir;
  const std::string demos = run_path(run_dir, "sft-demos.jsonl");
  const bool checked = spec.sft_check_every > 0;
  if (!o.quiet) {
    std::fprintf(stderr, "run: SFT warm-up on %lld %s demonstrations, %lld steps", static_cast<long long>(spec.sft_demos),
                 spec.env.c_str(), static_cast<long long>(spec.sft_steps));
    if (checked)
      std::fprintf(stderr, " at most: it stops once the model solves %g of %lld validation tasks greedily (checked every %lld)",
                   spec.sft_expect_greedy_reward, static_cast<long long>(spec.eval_prompts),
                   static_cast<long long>(spec.sft_check_every));
    std::fprintf(stderr, "\n");
  }
  if (!fs::exists(demos) &&
      run_process({o.interlace, "env", "demo", "--env", spec.env, "--n", std::to_string(spec.sft_demos), "--seed",
                   std::to_string(spec.seed + 1000003), "--model", model, "--out", demos + ".tmp"},
                  o.interrupted) != 0)
    return absl::InternalError("SFT warm-up: writing demonstrations failed (see above)");
  if (fs::exists(demos + ".tmp")) fs::rename(demos + ".tmp", demos);
  // Checked pieces train into sft-work/ and become sft-model/ when done, so a
  // resumed run never mistakes a piece for the warmed-up model.
  const fs::path work = checked ? fs::path(run_path(run_dir, "sft-work")) : fs::path(sft_dir);
  std::vector<std::string> base = {o.interlace, "train", "sft", "--model", model, "--data", demos, "--out", work.string(),
                                   "--steps", std::to_string(spec.sft_steps), "--batch-size",
                                   std::to_string(spec.sft_batch_size), "--lr", absl::StrCat(spec.sft_lr),
                                   "--warmup-steps", std::to_string(spec.sft_warmup_steps), "--schedule", spec.sft_schedule,
                                   "--seed", std::to_string(spec.seed)};
  if (o.quiet) base.push_back("--quiet");
  auto train = [&](std::vector<std::string> args, int64_t steps) -> absl::Status {
    const auto started = std::chrono::steady_clock::now();
    if (const int rc = run_process(args, o.interrupted); rc != 0)
      return rc == 130 ? absl::CancelledError("interrupted during the SFT warm-up")
                       : absl::InternalError("SFT warm-up failed (see above)");
    add_sft_timing(run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), steps);
    return absl::OkStatus();
  };
  if (!checked) {
    if (absl::Status s = train(base, spec.sft_steps); !s.ok()) return s;
    return sft_dir;
  }
  // A resumed run: the newest piece may have been checked already and passed.
  auto passed = [&](int64_t step) {
    for (const auto& row : read_jsonl(run_path(run_dir, "sft-checks.jsonl")))
      if (row.value("step", int64_t{-1}) == step && row.value("validation_greedy_reward", 0.0) >= spec.sft_expect_greedy_reward)
        return true;
    return false;
  };
  std::ofstream checks(run_path(run_dir, "sft-checks.jsonl"), std::ios::app);
  for (;;) {
    const auto [done, checkpoint] = last_checkpoint(work);
    if (done >= spec.sft_steps || (done > 0 && passed(done))) break;
    const int64_t stop_at = std::min(spec.sft_steps, (done / spec.sft_check_every + 1) * spec.sft_check_every);
    std::vector<std::string> args = base;
    for (const char* a : {"--stop-at", "--checkpoint-every"}) args.push_back(a), args.push_back(std::to_string(stop_at));
    if (!checkpoint.empty()) args.push_back("--resume"), args.push_back(checkpoint);
    if (absl::Status s = train(args, stop_at - done); !s.ok()) return s;
    // Only the newest checkpoint is kept (each holds the optimizer's state too).
    if (!checkpoint.empty()) fs::remove_all(checkpoint);
    auto reward = validation_reward(spec, o, work.string(), run_path(run_dir, absl::StrCat("sft-check-", stop_at, ".jsonl")));
    if (!reward.ok()) return reward.status();
    checks << nlohmann::json{{"step", stop_at}, {"validation_greedy_reward", *reward}}.dump() << std::endl;
    if (!o.quiet)
      std::fprintf(stderr, "run: SFT step %lld: the model solves %.0f%% of %lld validation tasks greedily%s\n",
                   static_cast<long long>(stop_at), 100 * *reward, static_cast<long long>(spec.eval_prompts),
                   *reward >= spec.sft_expect_greedy_reward ? ": warm-up done" : "");
    if (*reward >= spec.sft_expect_greedy_reward) break;
  }
  std::error_code ec;
  fs::remove_all(work / "checkpoints", ec);
  fs::rename(work, sft_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("SFT warm-up: cannot move ", work.string(), " to ", sft_dir, ": ", ec.message()));
  return sft_dir;
}

}  // namespace interlace::rl
