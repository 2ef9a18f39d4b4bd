// interlace run JOB.yaml: the whole RL job on this machine. It prepares the
// starting model (initialised, then SFT warm-up on the environment's
// demonstrations if the spec asks), evaluates it on held-out tasks, starts the
// learner and the rollout workers as child processes (`interlace serve ...`),
// restarts any that die, and when the learner is done evaluates the final
// model and writes the summary and the HTML report.
//
// interlace serve learner|worker: one service, as `run` starts them.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/model/model_init.h"
#include "interlace/rl/eval_compare.h"
#include "interlace/rl/job_spec.h"
#include "interlace/rl/learner_service.h"
#include "interlace/rl/report.h"
#include "interlace/transport/curve.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/supervisor.h"
#include "interlace/rl/worker_service.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};

std::string self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "interlace" : p.string();
}

struct Eval {
  bool ran = false;
  double mean_reward = NAN;
  int64_t episodes = 0;
  std::vector<json> rows;  // the episodes, for the paired before/after comparison
};

// Episodes on the environment's held-out tasks (`interlace rollout --eval`):
// one greedy episode per task when `samples` is 0, else `samples` per task at
// the rollout temperature.
Eval evaluate(const rl::JobSpec& spec, const std::string& model_dir, const std::string& out, int64_t samples) {
  Eval e;
  if (spec.eval_prompts <= 0) return e;
  if (!fs::exists(out)) {
    const bool greedy = samples == 0;
    const int rc = rl::run_process({self_exe(), "rollout", "--model", model_dir, "--env", spec.env, "--eval", "--prompts",
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
  e.rows = rl::read_jsonl(out);
  for (const json& j : e.rows) {
    sum += j.value("reward", 0.0);
    ++e.episodes;
  }
  e.ran = e.episodes > 0;
  e.mean_reward = e.ran ? sum / double(e.episodes) : NAN;
  return e;
}

// Greedy and (if the spec asks) sampled evaluation of one model, written to
// RUN_DIR/STEM.jsonl and RUN_DIR/STEM-sampled.jsonl.
struct Evals {
  Eval greedy, sampled;
};
Evals evaluate_both(const rl::JobSpec& spec, const std::string& model_dir, const std::string& run_dir,
                    const std::string& stem, const char* which, bool quiet) {
  if (!quiet && spec.eval_prompts > 0) {
    std::string sampled;
    if (spec.eval_samples > 0)
      sampled = absl::StrCat(", then ", spec.eval_prompts * spec.eval_samples, " sampled at temperature ",
                             spec.temperature);
    std::fprintf(stderr, "run: held-out evaluation of the %s model (%lld greedy episodes%s)\n", which,
                 static_cast<long long>(spec.eval_prompts), sampled.c_str());
  }
  Evals e;
  e.greedy = evaluate(spec, model_dir, rl::run_path(run_dir, stem + ".jsonl"), 0);
  if (spec.eval_samples > 0)
    e.sampled = evaluate(spec, model_dir, rl::run_path(run_dir, stem + "-sampled.jsonl"), spec.eval_samples);
  return e;
}

struct RunArgs {
  std::string job, run_dir;
  bool resume = false, quiet = false;
  std::string output = "table";
  int max_restarts = 10;
};

// Prepares the model the RL job starts from; returns its directory.
absl::StatusOr<std::string> prepare_model(const rl::JobSpec& spec, const std::string& run_dir, bool quiet) {
  std::string model = spec.model_dir;
  if (!spec.model_init.empty()) {
    model = rl::run_path(run_dir, "init-model");
    if (!fs::exists(fs::path(model) / "config.json")) {
      if (!quiet) std::fprintf(stderr, "run: initialising %s from %s\n", model.c_str(), spec.model_init.c_str());
      INTERLACE_RETURN_IF_ERROR(
          model::init_model_dir({.config_path = spec.model_init, .out_dir = model, .seed = spec.model_seed}));
    }
  }
  if (!spec.sft) return model;
  const std::string sft_dir = rl::run_path(run_dir, "sft-model");
  if (fs::exists(fs::path(sft_dir) / "config.json")) return sft_dir;
  const std::string demos = rl::run_path(run_dir, "sft-demos.jsonl");
  if (!quiet)
    std::fprintf(stderr, "run: SFT warm-up on %lld %s demonstrations, %lld steps\n",
                 static_cast<long long>(spec.sft_demos), spec.env.c_str(), static_cast<long long>(spec.sft_steps));
  if (rl::run_process({self_exe(), "env", "demo", "--env", spec.env, "--n", std::to_string(spec.sft_demos), "--seed",
                 std::to_string(spec.seed + 1000003), "--model", model, "--out", demos}) != 0)
    return absl::InternalError("SFT warm-up: writing demonstrations failed (see above)");
  std::vector<std::string> sft = {self_exe(), "train", "sft", "--model", model, "--data", demos, "--out", sft_dir,
                                  "--steps", std::to_string(spec.sft_steps), "--batch-size",
                                  std::to_string(spec.sft_batch_size), "--lr", absl::StrCat(spec.sft_lr),
                                  "--warmup-steps", std::to_string(spec.sft_warmup_steps), "--schedule", "cosine",
                                  "--seed", std::to_string(spec.seed)};
  if (quiet) sft.push_back("--quiet");
  if (rl::run_process(sft) != 0) return absl::InternalError("SFT warm-up failed (see above)");
  return sft_dir;
}

// Starts the learner and the workers and keeps them alive until the learner
// finishes the job (rl::supervise: restarts with back-off, a pids file).
int supervise(const RunArgs& a, const rl::JobSpec& spec, const std::string& run_dir) {
  std::vector<rl::SupervisedProcess> processes;
  processes.push_back({"learner", {self_exe(), "serve", "learner", "--run-dir", run_dir}});
  if (a.quiet) processes.back().args.push_back("--quiet");
  for (int64_t i = 0; i < spec.workers; ++i)
    processes.push_back({absl::StrCat("worker-", i),
                         {self_exe(), "serve", "worker", "--run-dir", run_dir, "--index", std::to_string(i)}});
  // Several processes share the cores: OpenMP threads must sleep, not spin, when idle.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  return rl::supervise(processes, {.primary = "learner",
                                   .max_restarts = a.max_restarts,
                                   .pids_file = rl::run_path(run_dir, "pids.json"),
                                   .interrupted = [] { return g_interrupted.load(); }});
}

// The run's CURVE keys (RUN/keys/, see transport/curve.h): the learner's pair
// and one pair per local worker. Workers started elsewhere (rollout.workers: 0)
// make their own pair on a shared run directory, or have their .pub copied in.
absl::Status make_run_keys(const std::string& run_dir, int64_t workers) {
  const std::string keys = rl::run_path(run_dir, "keys");
  if (auto s = transport::load_or_make_curve_key_pair(keys, "server"); !s.ok())
    return s.status();
  std::error_code ec;
  std::filesystem::create_directories(transport::client_keys_dir(keys), ec);  // where outside workers' keys go
  if (ec) return absl::PermissionDeniedError(absl::StrCat(transport::client_keys_dir(keys), ": ", ec.message()));
  ::chmod(transport::client_keys_dir(keys).c_str(), 0700);
  for (int64_t i = 0; i < workers; ++i)
    if (auto s = transport::load_or_make_curve_key_pair(transport::client_keys_dir(keys), absl::StrCat("worker-", i));
        !s.ok())
      return s.status();
  return absl::OkStatus();
}

int run_job(const RunArgs& a) {
  auto spec = rl::load_job_spec(a.job);
  if (!spec.ok()) return fail(spec.status());
  const std::string run_dir = fs::absolute(a.run_dir.empty() ? "runs/" + spec->name : a.run_dir).string();
  if (fs::exists(rl::run_path(run_dir, "endpoints.json")) && !a.resume)
    return fail(absl::StrCat(run_dir, " already holds a run; pass --resume to continue it, or --run-dir to start another"));
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return fail(absl::StrCat(run_dir, ": cannot create: ", ec.message()));
  fs::copy_file(a.job, rl::run_path(run_dir, "job.yaml"), fs::copy_options::overwrite_existing, ec);
  if (ec) return fail(absl::StrCat("cannot copy the job spec into ", run_dir, ": ", ec.message()));
  if (absl::Status s = core::write_file(rl::run_path(run_dir, "config.json"), rl::job_spec_json(*spec).dump(2) + "\n");
      !s.ok())
    return fail(s);
  signal(SIGINT, [](int) { g_interrupted = true; });
  signal(SIGTERM, [](int) { g_interrupted = true; });
  const auto t0 = Clock::now();

  auto initial = prepare_model(*spec, run_dir, a.quiet);
  if (!initial.ok()) return fail(initial.status());
  const std::string initial_dir = fs::absolute(*initial).string();
  const Evals before = evaluate_both(*spec, initial_dir, run_dir, "eval-before", "starting", a.quiet);

  rl::Endpoints endpoints;
  if (auto old = rl::read_endpoints(run_dir); old.ok() && a.resume) {
    endpoints = *old;
  } else {
    // The learner binds its ZeroMQ ports itself and writes them here (0: not yet).
    auto ports = rl::pick_free_ports(endpoints.host, 1 + static_cast<int>(spec->workers));
    if (!ports.ok()) return fail(ports.status());
    endpoints.learner_metrics = (*ports)[0];
    endpoints.worker_metrics.assign(ports->begin() + 1, ports->end());
    endpoints.initial_model = initial_dir;
    if (absl::Status s = make_run_keys(run_dir, spec->workers); !s.ok()) return fail(s);
    if (absl::Status s = rl::write_endpoints(run_dir, endpoints); !s.ok()) return fail(s);
  }
  const auto rl_start = Clock::now();
  if (const int rc = supervise(a, *spec, run_dir); rc != 0) return rc;
  const double rl_seconds = std::chrono::duration<double>(Clock::now() - rl_start).count();

  const std::string final_dir = rl::run_path(run_dir, "final-model");
  const Evals after = evaluate_both(*spec, final_dir, run_dir, "eval-after", "final", a.quiet);

  const std::vector<json> rows = rl::read_jsonl(rl::run_path(run_dir, "metrics.jsonl"));
  int64_t trajectories = 0, tokens = 0, dropped = 0;
  double dlogp = 0, stale = 0, hit = 0;
  for (const auto& r : rows) {
    trajectories += r.value("trajectories", int64_t{0});
    tokens += r.value("generated_tokens", int64_t{0});
    dropped += r.value("stale_dropped", int64_t{0});
    dlogp += r["mismatch"].value("logprob_abs_diff_mean", 0.0);
    stale += r.value("staleness_mean", 0.0);
  }
  if (!rows.empty()) hit = rows.back().value("cache_hit_rate", 0.0);
  const double n = std::max<double>(1, double(rows.size()));
  auto num_or_null = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  // Same tasks, same sampling seeds before and after: the per-task change and
  // its standard error say whether a rise is more than the draw.
  auto paired = [](const Eval& b, const Eval& e) -> std::optional<rl::PairedDifference> {
    if (!b.ran || !e.ran) return std::nullopt;
    auto d = rl::paired_reward_difference(b.rows, e.rows);
    if (!d.ok()) {
      std::fprintf(stderr, "run: comparing evaluations: %s\n", std::string(d.status().message()).c_str());
      return std::nullopt;
    }
    return *d;
  };
  auto paired_json = [&](const std::optional<rl::PairedDifference>& d) {
    if (!d) return json(nullptr);
    return json{{"tasks", d->tasks}, {"mean", num_or_null(d->mean)}, {"standard_error", num_or_null(d->standard_error)}};
  };
  const auto greedy_change = paired(before.greedy, after.greedy);
  const auto sampled_change = paired(before.sampled, after.sampled);
  json summary = {{"job", spec->name},
                  {"env", spec->env},
                  {"algorithm", spec->algorithm},
                  {"mode", rl::staleness_mode_name(spec->mode)},
                  {"steps", rows.size()},
                  {"trajectories_trained", trajectories},
                  {"trajectories_stale_dropped", dropped},
                  {"generated_tokens", tokens},
                  {"rl_seconds", rl_seconds},
                  {"total_seconds", std::chrono::duration<double>(Clock::now() - t0).count()},
                  {"tokens_per_second", rl_seconds > 0 ? double(tokens) / rl_seconds : 0.0},
                  {"trajectories_per_second", rl_seconds > 0 ? double(trajectories) / rl_seconds : 0.0},
                  {"eval_reward_before", num_or_null(before.greedy.mean_reward)},
                  {"eval_reward_after", num_or_null(after.greedy.mean_reward)},
                  {"eval_episodes", after.greedy.episodes},
                  {"eval_change", paired_json(greedy_change)},
                  {"eval_sampled_reward_before", num_or_null(before.sampled.mean_reward)},
                  {"eval_sampled_reward_after", num_or_null(after.sampled.mean_reward)},
                  {"eval_sampled_episodes", after.sampled.episodes},
                  {"eval_sampled_temperature", spec->temperature},
                  {"eval_sampled_change", paired_json(sampled_change)},
                  {"logprob_abs_diff_mean", dlogp / n},
                  {"staleness_mean", stale / n},
                  {"cache_hit_rate", hit},
                  {"run_dir", run_dir},
                  {"final_model", final_dir}};
  (void)core::write_file(rl::run_path(run_dir, "summary.json"), summary.dump(2) + "\n");
  (void)core::write_file(rl::run_path(run_dir, "report.html"),
                         rl::render_report(absl::StrCat("Interlace run: ", spec->name), summary, rows));
  if (a.output == "json") {
    std::printf("%s\n", summary.dump(2).c_str());
    return 0;
  }
  std::printf("job %s done: %zu steps, %lld trajectories in %.0f s (%.1f trajectories/s, %.0f tokens/s)\n",
              spec->name.c_str(), rows.size(), static_cast<long long>(trajectories), rl_seconds,
              summary["trajectories_per_second"].get<double>(), summary["tokens_per_second"].get<double>());
  auto change_text = [](const std::optional<rl::PairedDifference>& d) -> std::string {
    if (!d || d->tasks < 2) return "";
    return absl::StrFormat(" (per task %+.3f, standard error %.3f over %lld tasks)", d->mean, d->standard_error,
                           static_cast<long long>(d->tasks));
  };
  if (before.greedy.ran && after.greedy.ran)
    std::printf("held-out reward (%lld greedy episodes): %.3f before -> %.3f after%s\n",
                static_cast<long long>(after.greedy.episodes), before.greedy.mean_reward, after.greedy.mean_reward,
                change_text(greedy_change).c_str());
  if (before.sampled.ran && after.sampled.ran)
    std::printf("held-out reward (%lld episodes sampled at temperature %g): %.3f before -> %.3f after%s\n",
                static_cast<long long>(after.sampled.episodes), spec->temperature, before.sampled.mean_reward,
                after.sampled.mean_reward, change_text(sampled_change).c_str());
  std::printf("mean |dlogp| learner vs rollout %.2e, mean staleness %.2f versions, cache hit rate %.0f%%, %lld stale dropped\n",
              dlogp / n, stale / n, 100 * hit, static_cast<long long>(dropped));
  std::printf("run directory: %s (report.html, metrics.jsonl, summary.json, final-model/)\n", run_dir.c_str());
  return 0;
}

struct ServeArgs {
  std::string run_dir;
  int index = 0;
  bool quiet = false;
};

absl::StatusOr<std::pair<rl::JobSpec, rl::Endpoints>> load_run(const std::string& run_dir) {
  auto spec = rl::load_job_spec(rl::run_path(run_dir, "job.yaml"));
  if (!spec.ok()) return spec.status();
  auto endpoints = rl::read_endpoints(run_dir);
  if (!endpoints.ok()) return endpoints.status();
  return std::make_pair(*spec, *endpoints);
}

}  // namespace

void add_run_commands(CLI::App& app, Action& action) {
  auto r = std::make_shared<RunArgs>();
  CLI::App* run = app.add_subcommand(
      "run",
      "Run an RL job on this machine: SFT warm-up (optional), held-out evaluation, then\n"
      "the learner and rollout workers as local services over ZeroMQ until the job's\n"
      "steps are done, then evaluation of the final model. Writes RUN_DIR/ with the\n"
      "job's config, metrics.jsonl, checkpoints/, final-model/, summary.json and\n"
      "report.html. A service that dies is restarted; Ctrl-C stops, --resume continues.\n"
      "Example:\n"
      "  interlace run examples/calculator/job.yaml");
  run->add_option("job", r->job, "job spec (YAML); see examples/calculator/job.yaml")->required()->check(CLI::ExistingFile);
  run->add_option("--run-dir", r->run_dir, "where the run's files go (default: runs/<job name>)");
  run->add_flag("--resume", r->resume, "continue the run in --run-dir from its last checkpoint and spool");
  run->add_flag("--quiet", r->quiet, "no progress output");
  run->add_option("--max-restarts", r->max_restarts, "restarts allowed per service")->capture_default_str();
  run->add_option("-o,--output", r->output, "table or json")->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  run->callback([r, &action] { action = [r] { return run_job(*r); }; });

  auto s = std::make_shared<ServeArgs>();
  CLI::App* serve = app.add_subcommand("serve", "Run one service of a run directory (what `interlace run` starts)");
  serve->require_subcommand(1);
  CLI::App* learner = serve->add_subcommand("learner", "The learner service: trains on trajectories, publishes weights");
  learner->add_option("--run-dir", s->run_dir, "a run directory prepared by `interlace run`")->required();
  learner->add_flag("--quiet", s->quiet, "no progress output");
  learner->callback([s, &action] {
    action = [s] {
      auto run = load_run(s->run_dir);
      if (!run.ok()) return fail(run.status());
      return rl::run_learner({.run_dir = s->run_dir, .spec = run->first, .endpoints = run->second, .quiet = s->quiet});
    };
  });
  CLI::App* worker = serve->add_subcommand("worker", "A rollout worker: runs episodes, streams trajectories");
  worker->add_option("--run-dir", s->run_dir, "a run directory prepared by `interlace run`")->required();
  worker->add_option("--index", s->index, "worker number (its name is worker-N)")->capture_default_str();
  worker->callback([s, &action] {
    action = [s] {
      auto run = load_run(s->run_dir);
      if (!run.ok()) return fail(run.status());
      return rl::run_worker({.run_dir = s->run_dir, .spec = run->first, .endpoints = run->second, .index = s->index});
    };
  });
}

}  // namespace interlace::cli
