#include "interlace/rl/local_run.h"

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/model/model_init.h"
#include "interlace/rl/evaluation.h"
#include "interlace/rl/report.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/run_summary.h"
#include "interlace/rl/sft_warmup.h"
#include "interlace/rl/supervisor.h"
#include "interlace/transport/curve.h"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Prepares the model the RL job starts from; returns its directory.
// Seconds per phase of the run, in order, for the summary and the report.
struct Phases {
  nlohmann::json rows = nlohmann::json::array();
  Clock::time_point since = Clock::now();
  void end(const char* phase) {
    rows.push_back({{"phase", phase}, {"seconds", std::chrono::duration<double>(Clock::now() - since).count()}});
    since = Clock::now();
  }
};

absl::StatusOr<std::string> prepare_model(const JobSpec& spec, const LocalRunOptions& o, const std::string& run_dir,
                                          Phases& phases) {
  std::string model = spec.model_dir;
  if (!spec.model_init.empty()) {
    model = run_path(run_dir, "init-model");
    if (!fs::exists(fs::path(model) / "config.json")) {
      if (!o.quiet) std::fprintf(stderr, "run: initialising %s from %s\n", model.c_str(), spec.model_init.c_str());
      INTERLACE_RETURN_IF_ERROR(
          model::init_model_dir({.config_path = spec.model_init, .out_dir = model, .seed = spec.model_seed}));
    }
  }
  phases.end("model init");
  if (!spec.sft) return model;
  return run_sft_warmup(spec, {.interlace = o.interlace, .quiet = o.quiet, .interrupted = o.interrupted}, model, run_dir);
}

// A checked warm-up's checks (sft-checks.jsonl) and the steps it took.
void add_warmup_checks(nlohmann::json& summary, const std::string& run_dir) {
  const auto checks = read_jsonl(run_path(run_dir, "sft-checks.jsonl"));
  if (checks.empty()) return;
  summary["sft_checks"] = checks;
  summary["sft_steps_taken"] = checks.back().value("step", 0);
}

// Starts the learner and the workers and keeps them alive until the learner
// finishes the job (restarts with back-off, a pids file).
int run_services(const LocalRunOptions& o, const JobSpec& spec, const std::string& run_dir) {
  std::vector<SupervisedProcess> processes;
  processes.push_back({"learner", {o.interlace, "serve", "learner", "--run-dir", run_dir}});
  if (o.quiet) processes.back().args.push_back("--quiet");
  for (int64_t i = 0; i < (o.external_workers ? 0 : spec.workers); ++i)
    processes.push_back({absl::StrCat("worker-", i),
                         {o.interlace, "serve", "worker", "--run-dir", run_dir, "--index", std::to_string(i)}});
  // Several processes share the cores: OpenMP threads must sleep, not spin, when idle.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  return supervise(processes, {.primary = "learner",
                               .max_restarts = o.max_restarts,
                               .pids_file = run_path(run_dir, "pids.json"),
                               .interrupted = o.interrupted});
}

}  // namespace

absl::Status make_run_keys(const std::string& run_dir, int64_t workers) {
  const std::string keys = run_path(run_dir, "keys");
  if (auto s = transport::load_or_make_curve_key_pair(keys, "server"); !s.ok()) return s.status();
  std::error_code ec;
  fs::create_directories(transport::client_keys_dir(keys), ec);  // where outside workers' keys go
  if (ec) return absl::PermissionDeniedError(absl::StrCat(transport::client_keys_dir(keys), ": ", ec.message()));
  ::chmod(transport::client_keys_dir(keys).c_str(), 0700);
  for (int64_t i = 0; i < workers; ++i)
    if (auto s = transport::load_or_make_curve_key_pair(transport::client_keys_dir(keys), absl::StrCat("worker-", i));
        !s.ok())
      return s.status();
  return absl::OkStatus();
}

absl::StatusOr<LocalRunResult> run_local_job(const LocalRunOptions& o) {
  INTERLACE_ASSIGN_OR_RETURN(JobSpec spec, load_job_spec(o.job));
  const std::string run_dir = fs::absolute(o.run_dir.empty() ? "runs/" + spec.name : o.run_dir).string();
  if (fs::exists(run_path(run_dir, "endpoints.json")) && !o.resume)
    return absl::AlreadyExistsError(
        absl::StrCat(run_dir, " already holds a run; pass --resume to continue it, or --run-dir to start another"));
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(run_dir, ": cannot create: ", ec.message()));
  fs::copy_file(o.job, run_path(run_dir, "job.yaml"), fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot copy the job spec into ", run_dir, ": ", ec.message()));
  INTERLACE_RETURN_IF_ERROR(core::write_file(run_path(run_dir, "config.json"), job_spec_json(spec).dump(2) + "\n"));
  const auto t0 = Clock::now();
  Phases phases;

  INTERLACE_ASSIGN_OR_RETURN(const std::string initial, prepare_model(spec, o, run_dir, phases));
  phases.end("SFT warm-up");
  const std::string initial_dir = fs::absolute(initial).string();
  RunFigures figures;
  figures.before = evaluate_model(spec, o.interlace, initial_dir, run_dir, "eval-before", "starting", o.quiet);
  phases.end("evaluation before");
  if (auto shortfall = warmup_shortfall(spec, figures.before))
    std::fprintf(stderr, "run: warning: %s\n", shortfall->c_str());
  if (o.warmup_only) {
    figures.run_dir = run_dir;
    figures.total_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    LocalRunResult result;
    result.summary = run_summary(spec, figures);
    add_warmup_checks(result.summary, run_dir);
    result.summary["phase_seconds"] = phases.rows;
    result.summary["warmup_only"] = true;
    result.summary["start_model"] = initial_dir;
    (void)core::write_file(run_path(run_dir, "warmup-summary.json"), result.summary.dump(2) + "\n");
    return result;
  }

  Endpoints endpoints;
  if (!o.host.empty()) endpoints.host = o.host;
  if (auto old = read_endpoints(run_dir); old.ok() && o.resume) {
    endpoints = *old;
    if (!o.host.empty() && o.host != endpoints.host) {  // a learner restarted elsewhere (a new pod IP)
      endpoints.host = o.host;
      INTERLACE_RETURN_IF_ERROR(write_endpoints(run_dir, endpoints));
    }
  } else {
    // The learner binds its ZeroMQ ports itself and writes them here (0: not yet).
    const int local_workers = o.external_workers ? 0 : static_cast<int>(spec.workers);
    INTERLACE_ASSIGN_OR_RETURN(auto ports, pick_free_ports(endpoints.host, 1 + local_workers, o.metrics_port));
    endpoints.learner_metrics = ports[0];
    endpoints.worker_metrics.assign(ports.begin() + 1, ports.end());
    endpoints.initial_model = initial_dir;
    INTERLACE_RETURN_IF_ERROR(make_run_keys(run_dir, local_workers));
    INTERLACE_RETURN_IF_ERROR(write_endpoints(run_dir, endpoints));
  }
  INTERLACE_RETURN_IF_ERROR(write_prometheus_targets(run_dir, endpoints));
  phases.since = Clock::now();
  const auto rl_start = Clock::now();
  LocalRunResult result;
  if (o.before_services && !o.before_services(spec)) {
    result.exit_code = 130;
    return result;
  }
  result.exit_code = run_services(o, spec, run_dir);
  if (o.after_services) o.after_services();
  if (result.exit_code != 0) return result;
  figures.rl_seconds = std::chrono::duration<double>(Clock::now() - rl_start).count();
  phases.end("RL");

  figures.final_model = run_path(run_dir, "final-model");
  figures.after = evaluate_model(spec, o.interlace, figures.final_model, run_dir, "eval-after", "final", o.quiet);
  phases.end("evaluation after");
  figures.metrics_rows = read_jsonl(run_path(run_dir, "metrics.jsonl"));
  figures.run_dir = run_dir;
  figures.total_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  result.summary = run_summary(spec, figures);
  add_warmup_checks(result.summary, run_dir);
  result.summary["phase_seconds"] = phases.rows;
  (void)core::write_file(run_path(run_dir, "summary.json"), result.summary.dump(2) + "\n");
  if (auto run = load_report_run(run_dir); run.ok())
    (void)core::write_file(run_path(run_dir, "report.html"), render_report({*run}));
  return result;
}

}  // namespace interlace::rl
