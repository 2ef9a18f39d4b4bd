#include "interlace/rl/study.h"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/model/config.h"
#include "interlace/model/flops.h"
#include "interlace/model/model.h"
#include "interlace/model/state_drift.h"
#include "interlace/rl/local_run.h"
#include "interlace/rl/report.h"
#include "interlace/rl/rollout_job_spec.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/study_report.h"
#include "interlace/rl/study_summary.h"
#include "interlace/rl/supervisor.h"
#include "interlace/rollout/environment.h"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Memory per sequence is counted as a bf16-KV, fp32-state server holds it.
constexpr double kKvValueBytes = 2, kStateValueBytes = 4;
constexpr const char* kTrainedOn = kStudyTrainedOn;

struct Variant {
  std::string name, model;  // model: a config path, absolute
  model::ModelConfig config;
  double flops_per_token = 0;  // training, at the study's context
};

// `over` merged into `base`, key by key (maps recursively; anything else replaces).
void merge(YAML::Node base, const YAML::Node& over) {
  for (const auto& kv : over) {
    const std::string key = kv.first.as<std::string>();
    if (kv.second.IsMap() && base[key] && base[key].IsMap())
      merge(base[key], kv.second);
    else
      base[key] = YAML::Clone(kv.second);
  }
}

absl::Status spec_error(const std::string& spec, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(spec, ": ", what));
}

json value_or_null(const json& summary, const char* key) { return summary.contains(key) ? summary[key] : json(nullptr); }

// Episode rewards of a trajectories file, keyed by task and sample (the same
// key in every variant's file: held-out tasks and sampling seeds are shared).
json episode_rewards(const std::string& path) {
  json out = json::object();
  for (const json& t : read_jsonl(path))
    out[absl::StrCat(t.value("task_seed", uint64_t{0}), ":", t.value("sample", int64_t{0}))] = t.value("reward", 0.0);
  return out;
}

// Mean tokens per line of a JSONL file of token sequences; NaN when empty.
double mean_tokens(const std::string& path) {
  double tokens = 0;
  const auto lines = read_jsonl(path);
  for (const json& t : lines) tokens += double(t.value("tokens", json::array()).size());
  return lines.empty() ? NAN : tokens / double(lines.size());
}

// A JSON object read from a run's file; an empty object when it is missing
// or not one (a run cut short, a file damaged): its figures become null.
json read_object(const std::string& path) {
  auto text = core::read_file(path);
  if (!text.ok()) return json::object();
  json j = json::parse(*text, nullptr, false);
  return j.is_object() ? j : json::object();
}

// What a run's warm-up trained: the steps it took (a checked warm-up may stop
// early) and SFT tokens a second over the time `train sft` ran
// (RUN/sft-timing.json; runs made before it existed: the warm-up phase's
// seconds, which also hold writing the demonstrations).
struct SftFigures {
  json steps = nullptr, tokens_per_second = nullptr, training_flops = nullptr;
};
SftFigures sft_figures(const std::string& dir, const json& summary, double mean_demo_tokens, double flops_per_token) {
  SftFigures f;
  const json config = read_object(run_path(dir, "config.json"));
  const json sft = config.value("sft", json::object());
  if (!sft.is_object() || !sft.value("enabled", false)) return f;
  auto integer = [](const json& j, const char* key, int64_t fallback) {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : fallback;
  };
  const int64_t batch = integer(sft, "batch_size", 0);
  const int64_t steps = integer(summary, "sft_steps_taken", integer(sft, "steps", 0));
  f.steps = steps;
  if (batch <= 0 || !std::isfinite(mean_demo_tokens)) return f;
  f.training_flops = double(steps * batch) * mean_demo_tokens * flops_per_token;
  const json timing = read_object(run_path(dir, "sft-timing.json"));
  double seconds = timing.contains("train_seconds") && timing["train_seconds"].is_number() ? timing["train_seconds"].get<double>() : 0;
  double timed_steps = double(integer(timing, "steps", 0));
  if (seconds <= 0) {
    // Runs made before sft-timing.json: the warm-up phase's seconds, which are
    // milliseconds when the run was resumed after its warm-up (no figure then).
    const json phases = summary.contains("phase_seconds") && summary["phase_seconds"].is_array() ? summary["phase_seconds"] : json::array();
    for (const json& p : phases)
      if (p.is_object() && p.value("phase", std::string()) == "SFT warm-up" && p.contains("seconds") && p["seconds"].is_number())
        seconds = p["seconds"].get<double>();
    timed_steps = double(steps);
  }
  if (seconds >= 1 && timed_steps > 0) f.tokens_per_second = timed_steps * double(batch) * mean_demo_tokens / seconds;
  return f;
}

// Drift of the final model's log-probs over its own held-out episodes played
// back to back (up to 4096 tokens, turns of 128) with lightning states in
// bf16 and fp16 against fp32; kept in RUN/study-drift.json. Null for a model
// without lightning layers or a run without episodes.
json state_drift(const std::string& dir, const model::ModelConfig& config) {
  bool lightning = false;
  for (auto kind : config.layer_types) lightning = lightning || kind == model::LayerKind::kLinearAttention;
  if (!lightning) return nullptr;
  const std::string kept = run_path(dir, "study-drift.json");
  if (json j = read_object(kept); j.contains("bf16") && j.contains("f16")) return j;
  std::vector<int32_t> tokens;
  for (const json& t : read_jsonl(run_path(dir, "eval-after.jsonl")))
    for (const json& id : t.value("tokens", json::array()))
      if (tokens.size() < 4096 && id.is_number_integer()) tokens.push_back(id.get<int32_t>());
  if (tokens.size() < 256) return nullptr;
  auto m = model::Model::load(run_path(dir, "final-model"), model::PrecisionProfile{});
  if (!m.ok()) return nullptr;
  json out = {{"tokens", tokens.size()}, {"turn_tokens", 128}};
  for (core::DType d : {core::DType::kBF16, core::DType::kF16}) {
    const model::StateDrift drift = model::measure_state_drift(**m, tokens, 128, d);
    out[core::dtype_name(d)] = {{"mean", drift.mean}, {"max", drift.max}, {"mean_last_quarter", drift.mean_last_quarter}};
  }
  (void)core::write_file(kept, out.dump(2) + "\n");
  return out;
}

// Where a run's greedy episodes on an evaluation environment are kept: named
// by a hash of what they were played under (the environment, the number of
// tasks, the limits and precision), so editing the spec never credits one
// setting's episodes to another. A run trained again drops them all.
std::string study_eval_file(const fs::path& dir, const RolloutJobSpec& r) {
  const std::string key = absl::StrCat(r.env, "|", r.prompts, "|", r.max_turns, "|", r.max_new_tokens, "|",
                                       r.max_episode_tokens, "|", r.precision);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  return (dir / absl::StrFormat("study-eval-%016x.jsonl", h)).string();
}

absl::StatusOr<json> run_study_checked(const StudyOptions& o);

}  // namespace

// A value of the wrong type anywhere in the spec (yaml-cpp throws on it) is
// an error naming the line and column.
absl::StatusOr<json> run_study(const StudyOptions& o) {
  try {
    return run_study_checked(o);
  } catch (const YAML::Exception& e) {
    return spec_error(o.spec, absl::StrCat(e.what(), " (a value of the wrong type?)"));
  }
}

namespace {

absl::StatusOr<json> run_study_checked(const StudyOptions& o) {
  YAML::Node spec;
  try {
    spec = YAML::LoadFile(o.spec);
  } catch (const YAML::Exception& e) {
    return spec_error(o.spec, absl::StrCat("not valid YAML: ", e.what()));
  }
  if (!spec.IsMap()) return spec_error(o.spec, "expected a mapping (name, job, variants, ...)");
  for (const auto& kv : spec) {
    const std::string k = kv.first.as<std::string>();
    if (k != "name" && k != "job" && k != "overrides" && k != "match" && k != "reference" && k != "context" &&
        k != "seeds" && k != "variants" && k != "tasks" && k != "eval_envs" && k != "eval_prompts")
      return spec_error(o.spec, absl::StrCat(k, ": unknown key; allowed: name, job, overrides, match, reference, context, "
                                                "seeds, variants, tasks, eval_envs, eval_prompts"));
  }
  const std::string match = spec["match"] ? spec["match"].as<std::string>() : "params";
  if (match != "params" && match != "flops") return spec_error(o.spec, "match: '" + match + "' is not allowed; choose params or flops");
  const int64_t context = spec["context"] ? spec["context"].as<int64_t>() : 512;
  if (context < 1 || context > (1 << 20)) return spec_error(o.spec, "context: expected 1..1048576 tokens");
  std::vector<int64_t> seeds = {0};
  if (spec["seeds"]) seeds = spec["seeds"].as<std::vector<int64_t>>();
  if (seeds.empty()) return spec_error(o.spec, "seeds: at least one");
  if (!spec["variants"] || !spec["variants"].IsSequence() || spec["variants"].size() == 0)
    return spec_error(o.spec, "variants: a list of {name, model}");
  const fs::path here = fs::absolute(o.spec).parent_path();
  const std::string name = spec["name"] ? spec["name"].as<std::string>() : fs::path(o.spec).stem().string();
  if (!spec["job"]) return spec_error(o.spec, "job: required (the base job spec every variant runs)");
  const fs::path base_path = here / spec["job"].as<std::string>();
  YAML::Node base;
  try {
    base = YAML::LoadFile(base_path.string());
  } catch (const YAML::Exception& e) {
    return spec_error(o.spec, absl::StrCat("job: ", base_path.string(), ": ", e.what()));
  }
  if (spec["overrides"]) {
    if (!spec["overrides"].IsMap()) return spec_error(o.spec, "overrides: expected a mapping of job keys");
    merge(base, spec["overrides"]);
  }
  std::vector<Variant> variants;
  for (const auto& v : spec["variants"]) {
    if (!v["name"] || !v["model"]) return spec_error(o.spec, "variants: each needs a name and a model (a config path)");
    Variant var{v["name"].as<std::string>(), (here / v["model"].as<std::string>()).lexically_normal().string()};
    auto config = model::load_config(var.model);
    if (!config.ok()) return spec_error(o.spec, absl::StrCat("variant ", var.name, ": ", config.status().message()));
    var.config = *config;
    var.flops_per_token = model::training_flops_per_token(var.config, context);
    variants.push_back(std::move(var));
  }
  const std::string reference = spec["reference"] ? spec["reference"].as<std::string>() : variants[0].name;
  const Variant* ref = nullptr;
  for (const Variant& v : variants) ref = v.name == reference ? &v : ref;
  if (!ref) return spec_error(o.spec, "reference: '" + reference + "' is not one of the variants");
  const int64_t base_steps = base["sft"] && base["sft"]["steps"] ? base["sft"]["steps"].as<int64_t>() : 100;
  // A checked warm-up stops when it reaches its level: the variants then
  // train different budgets (each row's sft_steps_taken says what it took).
  if (match == "flops" && !o.quiet && base["sft"] && base["sft"]["check_every"] && base["sft"]["check_every"].as<int64_t>() > 0)
    std::fprintf(stderr, "study: note: sft.check_every > 0 lets a warm-up stop early, so the FLOPs are matched as budgets, "
                         "not as spent; set overrides: {sft: {check_every: 0}} to spend them all\n");
  // Tasks: environments each variant is trained on (default: the job's own).
  std::vector<std::string> tasks;
  if (spec["tasks"]) tasks = spec["tasks"].as<std::vector<std::string>>();
  if (tasks.empty()) tasks.push_back(base["env"] ? base["env"].as<std::string>() : "calculator");
  // Environments every final model is also evaluated on (greedy, held-out
  // tasks): longer contexts and more hops than it was trained on.
  std::vector<std::string> eval_envs;
  if (spec["eval_envs"]) eval_envs = spec["eval_envs"].as<std::vector<std::string>>();
  const int64_t eval_prompts = spec["eval_prompts"] ? spec["eval_prompts"].as<int64_t>() : 32;
  for (const std::string& e : tasks)
    if (auto env = rollout::make_environment(e); !env.ok())
      return spec_error(o.spec, absl::StrCat("tasks: ", env.status().message()));
  for (const std::string& e : eval_envs)
    if (auto env = rollout::make_environment(e); !env.ok())
      return spec_error(o.spec, absl::StrCat("eval_envs: ", env.status().message()));

  const std::string run_dir = fs::absolute(o.run_dir.empty() ? "runs/study-" + name : o.run_dir).string();
  std::error_code ec;
  if (!o.plan_only) fs::create_directories(run_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(run_dir, ": cannot create: ", ec.message()));
  json rows = json::array();
  std::vector<ReportRun> report_runs;
  const size_t total = variants.size() * seeds.size() * tasks.size();
  size_t done = 0, ran = 0;
  double ran_seconds = 0;  // the runs this call made: what the time left is estimated from
  for (const Variant& v : variants) {
    // Equal FLOPs: steps x FLOPs per token the same for every variant (the SFT
    // batches hold the same tokens whatever the architecture).
    const int64_t sft_steps =
        match == "flops" ? std::max<int64_t>(1, std::llround(double(base_steps) * ref->flops_per_token / v.flops_per_token))
                         : base_steps;
    for (size_t task = 0; task < tasks.size(); ++task)
    for (int64_t seed : seeds) {
      const std::string id = tasks.size() > 1 ? absl::StrCat(v.name, "-task", task, "-seed", seed) : absl::StrCat(v.name, "-seed", seed);
      const fs::path dir = fs::path(run_dir) / id;
      YAML::Node job = YAML::Clone(base);
      job["name"] = absl::StrCat(name, "-", id);
      job["seed"] = seed;
      job["env"] = tasks[task];
      job["model"] = YAML::Node(YAML::NodeType::Map);
      job["model"]["init"] = v.model;
      job["model"]["seed"] = seed;
      if (job["sft"]) job["sft"]["steps"] = sft_steps;
      if (o.plan_only) {
        rows.push_back({{"variant", v.name}, {"task", tasks[task]}, {"seed", seed}, {"parameters", v.config.parameter_count()},
                        {"training_flops_per_token", v.flops_per_token}, {"sft_steps", sft_steps},
                        {"sft_flops_per_sequence_token", double(sft_steps) * v.flops_per_token}, {"run_dir", dir.string()}});
        continue;
      }
      const std::string job_file = (dir.string() + ".yaml");
      fs::create_directories(dir, ec);
      {
        YAML::Emitter out;
        out << job;
        INTERLACE_RETURN_IF_ERROR(core::write_file(job_file, std::string(out.c_str()) + "\n"));
      }
      ++done;
      const auto started = std::chrono::steady_clock::now();
      bool kept_before = true;
      json summary;
      if (json kept = read_object(run_path(dir.string(), "summary.json")); !kept.empty()) {
        summary = std::move(kept);
        if (!o.quiet) std::fprintf(stderr, "study: [%zu/%zu] %s: done before, kept\n", done, total, id.c_str());
      } else {
        if (!o.quiet)
          std::fprintf(stderr, "study: [%zu/%zu] %s (%lld parameters, %.3g training FLOPs/token at %lld tokens, %lld SFT steps)\n",
                       done, total, id.c_str(), static_cast<long long>(v.config.parameter_count()), v.flops_per_token,
                       static_cast<long long>(context), static_cast<long long>(sft_steps));
        // Whatever was measured on an earlier final model goes with it.
        for (const auto& entry : fs::directory_iterator(dir, ec))
          if (const std::string f = entry.path().filename().string(); f.starts_with("study-eval-") || f == "study-drift.json")
            fs::remove(entry.path(), ec);
        auto result = run_local_job({.job = job_file, .run_dir = dir.string(), .interlace = o.interlace,
                                     .resume = fs::exists(run_path(dir.string(), "endpoints.json")), .quiet = true});
        if (!result.ok()) return absl::Status(result.status().code(), absl::StrCat(id, ": ", result.status().message()));
        if (result->exit_code != 0)
          return absl::InternalError(absl::StrCat(id, ": the job's services ended with exit code ", result->exit_code,
                                                  " (see ", dir.string(), "; rerun the study to resume)"));
        summary = result->summary;
        kept_before = false;
      }
      json row = {{"variant", v.name},
                  {"task", tasks[task]},
                  {"seed", seed},
                  {"parameters", v.config.parameter_count()},
                  {"training_flops_per_token", v.flops_per_token},
                  {"sft_steps", sft_steps},
                  {"sft_flops_per_sequence_token", double(sft_steps) * v.flops_per_token},
                  {"run_dir", dir.string()}};
      for (const char* k : {"eval_reward_before", "eval_reward_after", "eval_sampled_reward_before", "eval_sampled_reward_after",
                            "tokens_per_second", "cache_hit_rate", "logprob_abs_diff_mean", "rl_seconds", "total_seconds"})
        row[k] = value_or_null(summary, k);
      // What the study summarises: every episode's reward (paired across
      // variants by task and sample) and the run's other figures. With
      // several tasks every set is named after the task the model trained on.
      auto set_name = [&](const std::string& set) {
        return tasks.size() > 1 ? absl::StrCat(set, kTrainedOn, tasks[task]) : set;
      };
      json rewards = {{set_name("held-out greedy"), episode_rewards(run_path(dir.string(), "eval-after.jsonl"))},
                      {set_name("held-out sampled"), episode_rewards(run_path(dir.string(), "eval-after-sampled.jsonl"))}};
      const double episode_tokens = mean_tokens(run_path(dir.string(), "eval-after.jsonl"));
      const SftFigures sft =
          sft_figures(dir.string(), summary, mean_tokens(run_path(dir.string(), "sft-demos.jsonl")), v.flops_per_token);
      const json drift = state_drift(dir.string(), v.config);
      row["sft_steps_taken"] = sft.steps;
      row["sft_training_flops"] = sft.training_flops;
      row["figures"] = {
          {"sft_tokens_per_second", sft.tokens_per_second},
          {"rollout_tokens_per_second", value_or_null(summary, "tokens_per_second")},
          {"cache_hit_rate", value_or_null(summary, "cache_hit_rate")},
          {"logprob_abs_diff_mean", value_or_null(summary, "logprob_abs_diff_mean")},
          {"episode_tokens", std::isfinite(episode_tokens) ? json(episode_tokens) : json(nullptr)},
          {"state_bytes_per_sequence",
           std::isfinite(episode_tokens)
               ? json(model::sequence_state_bytes(v.config, std::llround(episode_tokens), kKvValueBytes, kStateValueBytes))
               : json(nullptr)},
          {"state_drift_bf16", drift.is_object() ? drift.value("bf16", json::object()).value("mean", json(nullptr)) : json(nullptr)},
          {"state_drift_fp16", drift.is_object() ? drift.value("f16", json::object()).value("mean", json(nullptr)) : json(nullptr)}};
      // The final model on the evaluation environments, greedy, under the
      // job's own rollout limits and precision (kept per run).
      json evals = json::object();
      // The job's own rollout limits and precision, as resolved in its config.json.
      const json resolved = read_object(run_path(dir.string(), "config.json"));
      const json rollout = resolved.contains("rollout") && resolved["rollout"].is_object() ? resolved["rollout"] : json::object();
      for (const std::string& env : eval_envs) {
        RolloutJobSpec r;
        r.env = env;
        r.prompts = eval_prompts;
        r.temperature = 0;
        r.eval = true;
        auto get = [&](const char* key, int64_t fallback) {
          return rollout.contains(key) && rollout[key].is_number_integer() ? rollout[key].get<int64_t>() : fallback;
        };
        r.max_turns = get("max_turns", r.max_turns);
        r.max_new_tokens = get("max_turn_tokens", r.max_new_tokens);
        r.max_episode_tokens = get("max_episode_tokens", r.max_episode_tokens);
        if (rollout.contains("precision") && rollout["precision"].is_string()) r.precision = rollout["precision"].get<std::string>();
        const std::string out = study_eval_file(dir, r);
        if (!fs::exists(out)) {
          const std::string model_dir = run_path(dir.string(), "final-model");
          if (run_process(rollout_command(r, o.interlace, model_dir, out + ".tmp")) != 0)
            return absl::InternalError(absl::StrCat(id, ": evaluating on ", env, " failed (see above)"));
          fs::rename(out + ".tmp", out, ec);
        }
        double reward = 0;
        const auto episodes = read_jsonl(out);
        for (const json& t : episodes) reward += t.value("reward", 0.0);
        evals[env] = episodes.empty() ? json(nullptr) : json(reward / double(episodes.size()));
        rewards[set_name(env)] = episode_rewards(out);
      }
      row["rewards"] = rewards;
      if (!eval_envs.empty()) row["eval_envs_greedy_reward"] = evals;
      rows.push_back(row);
      if (auto run = load_report_run(dir.string()); run.ok()) report_runs.push_back(std::move(*run));
      std::string timing;
      if (!kept_before) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        ran_seconds += seconds;
        ++ran;
        timing = absl::StrFormat(" (%.0f s; about %.0f min left for %zu runs)", seconds,
                                 ran_seconds / double(ran) * double(total - done) / 60, total - done);
      }
      if (!o.quiet)
        std::fprintf(stderr, "study: %s: held-out greedy %s -> %s%s\n", id.c_str(), row["eval_reward_before"].dump().c_str(),
                     row["eval_reward_after"].dump().c_str(), timing.c_str());
    }
  }
  json table = {{"study", name}, {"match", match}, {"reference", reference}, {"context", context}, {"run_dir", run_dir}, {"rows", rows}};
  if (o.plan_only) return table;
  // Memory per sequence against context length, from each config.
  json state_bytes = json::object();
  for (const Variant& v : variants)
    for (int64_t length = 128; length <= 65536; length *= 2)
      state_bytes[v.name].push_back({length, model::sequence_state_bytes(v.config, length, kKvValueBytes, kStateValueBytes)});
  table["state_bytes"] = state_bytes;
  table["state_bytes_dtypes"] = "bf16 KV, fp32 lightning states";
  json sets = json::array();
  for (const std::string& t : tasks)
    for (const std::string& set : {std::string("held-out greedy"), std::string("held-out sampled")}) {
      sets.push_back(tasks.size() > 1 ? absl::StrCat(set, kTrainedOn, t) : set);
      if (set == "held-out sampled")
        for (const std::string& e : eval_envs) sets.push_back(tasks.size() > 1 ? absl::StrCat(e, kTrainedOn, t) : e);
    }
  table["sets"] = sets;
  table["tasks"] = tasks;
  table["summary"] = summarise_study(table, reference);
  INTERLACE_RETURN_IF_ERROR(core::write_file(run_path(run_dir, "table.json"), table.dump(2) + "\n"));
  INTERLACE_RETURN_IF_ERROR(core::write_file(run_path(run_dir, "report.html"), render_study_report(table, table["summary"], run_dir)));
  if (!report_runs.empty())
    INTERLACE_RETURN_IF_ERROR(core::write_file(run_path(run_dir, "runs-report.html"), render_report(report_runs, run_dir)));
  return table;
}

}  // namespace
}  // namespace interlace::rl
