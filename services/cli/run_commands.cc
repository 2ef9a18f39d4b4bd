// interlace run JOB.yaml: the whole RL job on this machine (rl/local_run.h
// does it; this file parses options, prints the summary).
//
// interlace serve learner|worker: one service, as `run` starts them.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/serving/gateway.h"
#include "interlace/serving/serving_worker.h"
#include "interlace/rl/job_spec.h"
#include "interlace/rl/learner_service.h"
#include "interlace/rl/local_run.h"
#include "interlace/rl/report.h"
#include "interlace/core/file_util.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/run_summary.h"
#include "interlace/rl/study.h"
#include "interlace/rl/worker_service.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_interrupted{false};

struct RunArgs {
  std::string job, run_dir;
  bool resume = false, quiet = false, warmup_only = false;
  std::string output = "table";
  int max_restarts = 10;
  int metrics_port = 0;
};

int run_job(const RunArgs& a) {
  signal(SIGINT, [](int) { g_interrupted = true; });
  signal(SIGTERM, [](int) { g_interrupted = true; });
  auto result = rl::run_local_job({.job = a.job,
                                   .run_dir = a.run_dir,
                                   .interlace = self_exe(),
                                   .resume = a.resume,
                                   .quiet = a.quiet,
                                   .warmup_only = a.warmup_only,
                                   .max_restarts = a.max_restarts,
                                   .metrics_port = a.metrics_port,
                                   .interrupted = [] { return g_interrupted.load(); }});
  if (!result.ok()) return fail(result.status());
  if (result->exit_code != 0) return result->exit_code;
  if (a.output == "json")
    std::printf("%s\n", result->summary.dump(2).c_str());
  else
    std::printf("%s", rl::summary_text(result->summary).c_str());
  return 0;
}

struct StudyArgs {
  std::string spec, run_dir, output = "table";
  bool quiet = false, plan = false;
};

int study(const StudyArgs& a) {
  auto table = rl::run_study(
      {.spec = a.spec, .run_dir = a.run_dir, .interlace = self_exe(), .quiet = a.quiet, .plan_only = a.plan});
  if (!table.ok()) return fail(table.status());
  if (a.output == "json") {
    std::printf("%s\n", table->dump(2).c_str());
    return 0;
  }
  auto fig = [](const nlohmann::json& v, const char* fmt) {
    if (!v.is_number()) return std::string("-");
    char text[32];
    std::snprintf(text, sizeof text, fmt, v.get<double>());
    return std::string(text);
  };
  std::printf("study %s (matched on %s, reference %s, FLOPs at %lld tokens)\n",
              (*table)["study"].get<std::string>().c_str(), (*table)["match"].get<std::string>().c_str(),
              (*table)["reference"].get<std::string>().c_str(), static_cast<long long>((*table)["context"].get<int64_t>()));
  std::printf("%-16s %-28s %-5s %-10s %-11s %-7s %-15s %-15s %s\n", "VARIANT", "TASK", "SEED", "PARAMS", "TRAIN FLOP/T",
              "SFT", "GREEDY B->A", "SAMPLED B->A", "WALL S");
  for (nlohmann::json r : (*table)["rows"]) {  // a copy: keys a row lacks (a --plan row's results) read as null
    std::printf("%-16s %-28s %-5lld %-10lld %-11s %-7lld %-15s %-15s %s\n", r["variant"].get<std::string>().c_str(),
                r["task"].get<std::string>().substr(0, 28).c_str(),
                static_cast<long long>(r["seed"].get<int64_t>()), static_cast<long long>(r["parameters"].get<int64_t>()),
                fig(r["training_flops_per_token"], "%.3g").c_str(), static_cast<long long>(r["sft_steps"].get<int64_t>()),
                (fig(r["eval_reward_before"], "%.3f") + "->" + fig(r["eval_reward_after"], "%.3f")).c_str(),
                (fig(r["eval_sampled_reward_before"], "%.3f") + "->" + fig(r["eval_sampled_reward_after"], "%.3f")).c_str(),
                fig(r["total_seconds"], "%.0f").c_str());
    if (r.contains("eval_envs_greedy_reward"))
      for (const auto& [env, reward] : r["eval_envs_greedy_reward"].items())
        std::printf("    greedy on %s: %s\n", env.c_str(), fig(reward, "%.3f").c_str());
  }
  // Per variant: means over its runs +- standard errors, and the paired
  // difference from the reference (RUN_DIR/report.html has the rest).
  if (!table->contains("summary")) return 0;
  const auto& summary = (*table)["summary"];
  auto mean_se = [&](const nlohmann::json& r, const char* mean, const char* sign) {
    if (!r.is_object() || !r[mean].is_number()) return std::string("-");
    std::string s = fig(r[mean], sign);
    if (r["se"].is_number()) s += " +- " + fig(r["se"], "%.3f");
    return s;
  };
  std::printf("\nper variant (mean +- standard error over runs; vs %s: paired on the same tasks and seeds)\n",
              summary["reference"].get<std::string>().c_str());
  for (const auto& set : summary["sets"]) {
    std::printf("  %s\n", set.get<std::string>().c_str());
    for (const auto& v : summary["variants"]) {
      const std::string s = set.get<std::string>();
      std::printf("    %-16s %-18s", v["variant"].get<std::string>().c_str(),
                  mean_se(v["rewards"].contains(s) ? v["rewards"][s] : nlohmann::json(), "mean", "%.3f").c_str());
      if (v.contains("vs_reference") && v["vs_reference"].contains(s))
        std::printf("  vs %s %s", summary["reference"].get<std::string>().c_str(),
                    mean_se(v["vs_reference"][s], "diff", "%+.3f").c_str());
      std::printf("\n");
    }
  }
  std::printf("report: %s/report.html\n", (*table)["run_dir"].get<std::string>().c_str());
  return 0;
}

struct ServeArgs {
  std::string run_dir, load_file;
  int index = 0;
  bool quiet = false;
  PoolRoleArgs pool;
  serving::ServingWorkerOptions serving;  // serve worker --serve MODEL_DIR
};

// Exactly one of --run-dir (one run's service) and --redis (a pool role).
std::optional<int> serve_mode_error(const ServeArgs& s, const char* role) {
  if (!s.serving.model_dir.empty()) {
    if (!s.run_dir.empty()) {
      fail(absl::StrCat("serve ", role, ": --serve (a serving worker) goes without --run-dir"));
      return 2;
    }
    return std::nullopt;
  }
  if (s.run_dir.empty() == s.pool.redis.empty()) {
    fail(absl::StrCat("serve ", role, ": pass --run-dir RUN (a service of one run, what `interlace run` ",
                             "starts) or --redis HOST:PORT (a long-lived ", role, " of the control plane), not ",
                      s.run_dir.empty() ? "neither" : "both"));
    return 2;
  }
  return std::nullopt;
}

absl::StatusOr<std::pair<rl::JobSpec, rl::Endpoints>> load_run(const std::string& run_dir) {
  auto spec = rl::load_job_spec(rl::run_path(run_dir, "job.yaml"));
  if (!spec.ok()) return spec.status();
  auto endpoints = rl::read_endpoints(run_dir);
  if (!endpoints.ok()) return endpoints.status();
  return std::make_pair(*spec, *endpoints);
}

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out;
};

// One run's report, or several overlaid; runs still going are read as they are.
int report(const ReportArgs& a) {
  std::vector<rl::ReportRun> runs;
  for (const std::string& dir : a.runs) {
    auto run = rl::load_report_run(dir);
    if (!run.ok()) return fail(run.status());
    runs.push_back(std::move(*run));
  }
  const std::string out = a.out.empty() ? (fs::path(runs[0].dir) / "report.html").string() : a.out;
  const std::string html = rl::render_report(runs, fs::absolute(out).parent_path().string());
  if (absl::Status s = core::write_file(out, html); !s.ok()) return fail(s);
  std::fprintf(stderr, "report of %zu run(s) written to %s\n", runs.size(), out.c_str());
  return 0;
}

}  // namespace

void add_run_commands(CLI::App& app, Action& action) {
  auto rep = std::make_shared<ReportArgs>();
  CLI::App* report_cmd = app.add_subcommand(
      "report",
      "Render a run's HTML report (one self-contained file): the held-out result first, time by\n"
      "phase, figures with units, plots over RL steps. Several run directories overlay: the same\n"
      "series per run in one chart and their figures side by side. A run still going is\n"
      "reported from what it has written so far. Examples:\n"
      "  interlace report runs/calculator-grpo                  # writes runs/calculator-grpo/report.html\n"
      "  interlace report runs/a runs/b --out compare.html");
  report_cmd->add_option("runs", rep->runs, "run directories")->required()->check(CLI::ExistingDirectory);
  report_cmd->add_option("--out", rep->out, "HTML file to write (default: the first run's report.html)");
  report_cmd->callback([rep, &action] { action = [rep] { return report(*rep); }; });

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
  run->add_flag("--warmup-only", r->warmup_only,
                "stop after the SFT warm-up and the held-out evaluation of the starting model (no RL);\n"
                "writes RUN_DIR/warmup-summary.json");
  run->add_option("--max-restarts", r->max_restarts, "restarts allowed per service")->capture_default_str();
  run->add_option("--metrics-port", r->metrics_port,
                  "serve the learner's /metrics on PORT and worker N's on PORT+1+N (default: free ports);\n"
                  "either way RUN_DIR/prometheus-targets.json lists them for Prometheus' file_sd")
      ->check(CLI::Range(1, 65535));
  run->add_option("-o,--output", r->output, "table or json")->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  run->callback([r, &action] { action = [r] { return run_job(*r); }; });

  auto st = std::make_shared<StudyArgs>();
  CLI::App* study_cmd = app.add_subcommand(
      "study",
      "Run the same job on several architecture variants (full attention, hybrids, sliding-window)\n"
      "and seeds, each through `interlace run`'s code path, matched on parameters or on training\n"
      "FLOPs; writes RUN_DIR/table.json (one row per variant and seed) and RUN_DIR/report.html.\n"
      "A study that stopped resumes where it was. Example:\n"
      "  interlace study examples/study/tiny.yaml");
  study_cmd->add_option("spec", st->spec, "study spec (YAML); see examples/study/tiny.yaml")->required()->check(CLI::ExistingFile);
  study_cmd->add_option("--run-dir", st->run_dir, "where the runs go (default: runs/study-<name>)");
  study_cmd->add_flag("--quiet", st->quiet, "no progress output");
  study_cmd->add_flag("--plan", st->plan, "print the runs it would make (variants, parameters, FLOPs, SFT steps); run nothing");
  study_cmd->add_option("-o,--output", st->output, "table or json")->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  study_cmd->callback([st, &action] { action = [st] { return study(*st); }; });

  auto s = std::make_shared<ServeArgs>();
  CLI::App* serve = app.add_subcommand(
      "serve", "Run one service: of a run directory (what `interlace run` starts), or a long-lived role of the\n"
               "control plane (controller, runner, and with --redis: learner, worker)");
  serve->require_subcommand(1);
  CLI::App* learner = serve->add_subcommand(
      "learner",
      "The learner service: trains on trajectories, publishes weights. With --run-dir, the learner of\n"
      "one run. With --redis, a pool learner: claims queued train jobs one at a time, asks the\n"
      "controller for the job's rollout.workers pool workers (starting once rollout.min_workers are\n"
      "given), runs the job in DIR/JOB_ID/ and gives the workers back at its end; a restarted one\n"
      "(same --name) resumes its job from the last checkpoint. Examples:\n"
      "  interlace serve learner --run-dir runs/calculator-grpo\n"
      "  interlace serve learner --redis 127.0.0.1:6379 --dir /var/lib/interlace/jobs --name learner-0");
  learner->add_option("--run-dir", s->run_dir, "a run directory prepared by `interlace run`");
  learner->add_flag("--quiet", s->quiet, "no progress output");
  add_pool_role_options(learner, s->pool);
  learner->callback([s, &action] {
    action = [s] {
      if (auto e = serve_mode_error(*s, "learner")) return *e;
      if (!s->pool.redis.empty()) return serve_pool_role("learner", s->pool);
      auto run = load_run(s->run_dir);
      if (!run.ok()) return fail(run.status());
      return rl::run_learner({.run_dir = s->run_dir, .spec = run->first, .endpoints = run->second, .quiet = s->quiet});
    };
  });
  CLI::App* worker = serve->add_subcommand(
      "worker",
      "A rollout worker: runs episodes, streams trajectories to the learner. With --run-dir, a\n"
      "worker of one run. With --redis, a pool worker: registers in Redis with its load, runs the\n"
      "rollout of whatever train job the controller assigns it (on DIR/JOB_ID/run, shared with\n"
      "the learners), and is free again when the job ends or is cancelled. Examples:\n"
      "  interlace serve worker --run-dir runs/calculator-grpo --index 1\n"
      "  interlace serve worker --redis 127.0.0.1:6379 --dir /var/lib/interlace/jobs --name worker-0\n"
      "  interlace serve worker --serve MODEL_DIR --keys KEYS --listen tcp://127.0.0.1:5600");
  worker->add_option("--run-dir", s->run_dir, "a run directory prepared by `interlace run`");
  worker->add_option("--serve", s->serving.model_dir,
                     "a serving worker of this model directory: the engine and its prefix/state cache behind\n"
                     "the gateway's token protocol (with --keys and --listen; see `serve gateway`)");
  worker->add_option("--keys", s->serving.keys_dir, "with --serve: its CURVE key directory (server pair made if missing; clients/ admits the gateway)");
  worker->add_option("--listen", s->serving.listen, "with --serve: ZeroMQ endpoint to bind (port *: any free one)")->capture_default_str();
  worker->add_option("--endpoint-file", s->serving.endpoint_file, "with --serve: write the bound endpoint there");
  worker->add_option("--events-listen", s->serving.events_listen,
                     "with --serve: ZeroMQ endpoint of the cache events (PUB) gateways route by\n"
                     "(default: --listen's host, any free port; gateways learn it from the worker)");
  worker->add_option("--metrics-listen", s->serving.metrics_listen,
                     "with --serve: serve Prometheus /metrics on HOST:PORT (port 0: any free one; default: none)");
  worker->add_option("--metrics-port-file", s->serving.metrics_port_file, "with --serve: write the metrics port there");
  worker->add_option("--precision", s->serving.precision, "with --serve: precision profile")->capture_default_str();
  worker->add_option("--max-running", s->serving.max_running, "with --serve: sequences decoded together")->capture_default_str();
  worker->add_option("--cache-bytes", s->serving.cache_bytes,
                     "with --serve: bytes the prefix/state cache may hold (0: the machine default, -1: no cache)")
      ->capture_default_str();
  worker->add_option("--speculate", s->serving.speculate,
                     "with --serve: speculative decoding: off, ngram[:k=4] (prompt lookup) or model:DIR[,k=4]\n"
                     "(a draft model with the same tokenizer); the output is token for token the same")
      ->capture_default_str();
  worker->add_option("--follow", s->serving.follow,
                     "with --serve: a training run to follow: its directory (`interlace run`'s, or a job's), or a\n"
                     "control-plane JOB_ID (its run under --dir); each weights version its learner publishes\n"
                     "is loaded between engine steps, and /generate reports the version of every token");
  worker->add_option("--follow-poll-ms", s->serving.follow_poll_ms, "with --follow: how often to ask the learner for newer weights")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{50}, int64_t{600000}));
  worker->add_option("--advertise", s->serving.advertise,
                     "with --serve --redis: the endpoint gateways reach it at, as registered\n"
                     "(default: the bound one, 0.0.0.0 replaced by this host's name)");
  worker->add_option("--threads", s->serving.threads,
                     "with --serve: CPU threads (default: every core; give each of several workers on one machine its share)");
  worker->add_option("--index", s->index, "worker number (its name is worker-N)")->capture_default_str();
  worker->add_option("--load-file", s->load_file, "with --run-dir: write its load (JSON) there about once a second");
  worker->add_flag("--quiet", s->quiet, "no progress output");
  add_pool_role_options(worker, s->pool);
  worker->callback([s, &action] {
    action = [s] {
      if (auto e = serve_mode_error(*s, "worker")) return *e;
      if (!s->serving.model_dir.empty()) {
        s->serving.quiet = s->quiet;
        // With --redis: registered in the control plane, where gateways find it.
        s->serving.redis = s->pool.redis;
        s->serving.prefix = s->pool.prefix;
        s->serving.name = s->pool.name;
        if (!s->serving.follow.empty()) {
          // A run directory, or a control-plane job's id (its run under --dir).
          namespace fs = std::filesystem;
          std::string run = s->serving.follow;
          if (!fs::is_directory(run)) {
            const char* home = std::getenv("HOME");
            const std::string jobs = s->pool.dir.empty() ? std::string(home && *home ? home : "/tmp") + "/.interlace/jobs" : s->pool.dir;
            run = (fs::path(jobs) / s->serving.follow / "run").string();
            if (!fs::is_directory(run))
              return fail(absl::StrCat("--follow ", s->serving.follow, ": neither a run directory nor a job under ", jobs,
                                       " (no ", run, "; --dir names the jobs' directory)"));
          } else if (fs::is_directory(fs::path(run) / "run") && !fs::exists(fs::path(run) / "keys")) {
            run = (fs::path(run) / "run").string();  // a job's directory: its run is inside
          }
          s->serving.follow = run;
        }
        return serving::run_serving_worker(s->serving);
      }
      if (!s->pool.redis.empty()) return serve_pool_role("worker", s->pool);
      auto run = load_run(s->run_dir);
      if (!run.ok()) return fail(run.status());
      return rl::run_worker({.run_dir = s->run_dir,
                             .spec = run->first,
                             .endpoints = run->second,
                             .index = s->index,
                             .name = s->pool.name,  // --name: toward the learner, instead of worker-N
                             .load_file = s->load_file,
                             .quiet = s->quiet});
    };
  });
  auto g = std::make_shared<serving::GatewayOptions>();
  auto token_file = std::make_shared<std::string>();
  CLI::App* gateway = serve->add_subcommand(
      "gateway",
      "An OpenAI-compatible HTTP gateway in front of serving workers (`serve worker --serve`):\n"
      "/v1/chat/completions and /v1/completions (streamed or not), /v1/models, /generate (token\n"
      "ids in and out, with log-probs and weights versions), /healthz, /readyz, /metrics. Clients\n"
      "send Authorization: Bearer TOKEN. A request goes to the worker holding the longest prefix of\n"
      "its prompt unless the loads are imbalanced (SGLang's cache-aware rule; --routing), and\n"
      "X-Session-Id pins a conversation to one worker. Workers are given with --worker, or found in\n"
      "the control plane's registry with --redis. Example:\n"
      "  interlace serve worker --serve MODEL --keys KEYS --listen tcp://127.0.0.1:5600 &\n"
      "  INTERLACE_TOKEN=secret interlace serve gateway --model MODEL --keys KEYS --worker tcp://127.0.0.1:5600\n"
      "  curl -H 'Authorization: Bearer secret' localhost:8000/v1/chat/completions \\\n"
      "       -d '{\"messages\": [{\"role\": \"user\", \"content\": \"What is 2+3?\"}]}'");
  gateway->add_option("--model", g->model_dir, "the served model's directory (its tokenizer, chat template and config)")->required();
  gateway->add_option("--worker", g->workers, "a serving worker's ZeroMQ endpoint (repeat for several)");
  gateway->add_option("--redis", g->redis,
                      "the control plane's Redis HOST:PORT: serving workers registered there (serve worker --serve\n"
                      "--redis) are added as they appear, and X-Session-Id pins live there so gateway replicas\n"
                      "agree (password: $INTERLACE_REDIS_PASSWORD)");
  gateway->add_option("--prefix", g->prefix, "with --redis: Redis key prefix")->capture_default_str();
  gateway->add_option("--session-ttl", g->session_ttl_s, "with --redis: seconds a session pin outlives its last use")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400 * 30));
  gateway->add_option("--keys", g->keys_dir, "the serving workers' key directory (server.pub; the gateway's pair goes in clients/)")->required();
  gateway->add_option("--listen", g->listen, "HOST:PORT (port 0: any free one)")->capture_default_str();
  gateway->add_option("--name", g->model_name, "the model name clients ask for (default: the directory's name)");
  gateway->add_option("--token-file", *token_file, "a file holding the bearer token (default: $INTERLACE_TOKEN)");
  gateway->add_option("--max-in-flight", g->max_in_flight, "requests answered at once; more get 429")->capture_default_str();
  gateway->add_option("--max-model-len", g->max_model_len, "prompt + generated tokens (default: config.json's max_position_embeddings, else 8192)");
  gateway->add_option("--port-file", g->port_file, "write the port it listens on there");
  gateway->add_option("--routing", g->routing, "cache_aware (SGLang's rule), least_loaded or round_robin")
      ->check(CLI::IsMember({"cache_aware", "least_loaded", "round_robin"}))->capture_default_str();
  gateway->add_option("--cache-threshold", g->cache_threshold, "share of the prompt a worker's prefix must cover to win")->capture_default_str();
  gateway->add_option("--balance-abs", g->balance_abs, "loads are imbalanced above this difference in requests in flight...")->capture_default_str();
  gateway->add_option("--balance-rel", g->balance_rel, "...and when the busiest has this many times the idlest's")->capture_default_str();
  gateway->add_flag("--quiet", g->quiet, "no startup line");
  gateway->callback([g, token_file, &action] {
    action = [g, token_file] {
      if (!token_file->empty()) {
        auto t = core::read_file(*token_file);
        if (!t.ok()) return fail(t.status());
        g->token = std::string(absl::StripAsciiWhitespace(*t));
      } else if (const char* env = std::getenv("INTERLACE_TOKEN")) {
        g->token = env;
      }
      return serving::run_gateway(*g);
    };
  });
}

}  // namespace interlace::cli
