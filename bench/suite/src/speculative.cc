// interlace bench speculative: decode tokens/s and acceptance with and without
// speculative decoding (prompt-lookup drafts), side by side in one run, for
// each model, workload (calculator and kv-retrieval agent episodes, random
// prompts), temperature and batch size; and the time spent rolling sequences
// back after rejections as a fraction of the run.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "interlace/bench/bench_util.h"
#include "interlace/bench/suites.h"
#include "interlace/core/status.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/model.h"
#include "interlace/model/model_init.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rollout/rollout_stack.h"

namespace interlace::bench {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


struct Loaded {
  std::shared_ptr<model::Model> model;
  std::unique_ptr<model::Tokenizer> tokenizer;
};

absl::StatusOr<json> run_one(const Loaded& l, const std::string& workload, double temperature, int64_t batch,
                             const rollout::SpeculativeConfig& spec, const SpeculativeBenchArgs& a) {
  const model::ChatTemplate tmpl = *model::ChatTemplate::create(*l.tokenizer);
  rollout::RolloutStack stack = rollout::make_rollout_stack(
      l.model, *l.tokenizer, tmpl,
      {.max_running = batch,
       .cache = cache::CacheConfig{},
       .limits = {.max_turns = a.max_turns, .max_turn_tokens = a.max_new_tokens, .max_episode_tokens = 4096},
       .speculate = spec});
  rollout::SamplingParams sampling;
  sampling.temperature = static_cast<float>(temperature);
  int64_t generated = 0;
  const auto t0 = Clock::now();
  if (workload == "random") {
    // Random prompts straight to the engine: nothing to look up but what the model repeats.
    std::mt19937_64 rng(a.seed);
    for (int64_t i = 0; i < a.episodes; ++i) {
      rollout::Request r;
      for (int t = 0; t < 64; ++t) r.prompt.push_back(static_cast<int32_t>(rng() % l.tokenizer->vocab_size()));
      r.sampling = sampling;
      r.sampling.seed = a.seed + i;
      r.sampling.max_new_tokens = a.max_new_tokens;
      stack.engine->submit(r);
    }
    stack.engine->run();
    for (const auto& o : stack.engine->take_finished()) generated += static_cast<int64_t>(o.tokens.size());
  } else {
    INTERLACE_ASSIGN_OR_RETURN(auto env, rollout::make_environment(workload));
    std::vector<rollout::EpisodeSpec> specs;
    for (int64_t p = 0; p < a.episodes; ++p) {
      const uint64_t task_seed = a.seed + static_cast<uint64_t>(p);
      for (auto& e : rollout::group_episodes(*env, task_seed, p, 1, rollout::group_seed(task_seed, a.seed), sampling))
        specs.push_back(std::move(e));
    }
    for (const auto& t : stack.loop->run(std::move(specs))) generated += t.generated_tokens();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const rollout::EngineStats& s = stack.engine->stats();
  return json{{"speculate", rollout::describe(spec)},
              {"seconds", seconds},
              {"generated_tokens", generated},
              {"decode_tokens_per_second", seconds > 0 ? double(s.decode_tokens) / seconds : 0.0},
              {"generated_tokens_per_second", seconds > 0 ? double(generated) / seconds : 0.0},
              {"steps", s.steps},
              {"verifications", s.spec_verifications},
              {"drafted", s.spec_drafted},
              {"accepted", s.spec_accepted},
              {"acceptance", s.spec_drafted ? double(s.spec_accepted) / double(s.spec_drafted) : 0.0},
              {"tokens_per_verification", s.spec_verifications ? double(s.spec_emitted) / double(s.spec_verifications) : 0.0},
              {"rollback_seconds", s.spec_rollback_seconds},
              {"rollback_fraction", seconds > 0 ? s.spec_rollback_seconds / seconds : 0.0}};
}

}  // namespace

absl::Status run_bench_speculative(const Common& c, const SpeculativeBenchArgs& a) {
  INTERLACE_ASSIGN_OR_RETURN(const rollout::SpeculativeConfig spec, rollout::parse_speculate(a.speculate));
  if (!spec.enabled() || spec.method != rollout::SpeculativeConfig::Method::kNgram)
    return absl::InvalidArgumentError("bench speculative: --speculate must be an ngram spec (ngram:k=N)");
  char tmpl[] = "/tmp/interlace-bench-spec-XXXXXX";
  if (!::mkdtemp(tmpl)) return absl::InternalError("bench speculative: cannot make a temporary directory");
  const std::string tmp = tmpl;
  json results = json::array();
  absl::Status status;
  for (const std::string& name : a.models) {
    auto dir = model_dir_or_example(name, tmp);
    if (!dir.ok()) {
      status = dir.status();
      break;
    }
    Loaded l;
    auto m = model::Model::load(*dir, model::PrecisionProfile{});
    auto tok = model::load_tokenizer(*dir);
    if (!m.ok() || !tok.ok()) {
      status = !m.ok() ? m.status() : tok.status();
      break;
    }
    l.model = std::shared_ptr<model::Model>(std::move(*m));
    l.tokenizer = std::move(*tok);
    for (const std::string& workload : a.workloads)
      for (double temperature : a.temperatures)
        for (int64_t batch : a.batch_sizes) {
          json row = {{"model", name}, {"workload", workload}, {"temperature", temperature}, {"batch", batch}};
          std::fprintf(stderr, "bench speculative: %s, %s, temperature %g, batch %lld...\n", name.c_str(),
                       workload.c_str(), temperature, static_cast<long long>(batch));
          auto off = run_one(l, workload, temperature, batch, {}, a);
          auto on = off.ok() ? run_one(l, workload, temperature, batch, spec, a) : off;
          if (!on.ok()) {
            status = on.status();
            break;
          }
          row["off"] = *off;
          row["on"] = *on;
          const double base = (*off)["decode_tokens_per_second"].get<double>();
          row["speedup"] = base > 0 ? (*on)["decode_tokens_per_second"].get<double>() / base : 0.0;
          results.push_back(row);
        }
    if (!status.ok()) break;
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!status.ok()) return status;
  emit(c, "speculative",
       {{"models", a.models}, {"workloads", a.workloads}, {"temperatures", a.temperatures},
        {"batch_sizes", a.batch_sizes}, {"episodes", a.episodes}, {"max_turns", a.max_turns},
        {"max_new_tokens", a.max_new_tokens}, {"speculate", a.speculate}, {"seed", a.seed}},
       results, [&] {
         std::printf("%-22s %-40s %5s %5s %10s %10s %8s %7s %8s %9s\n", "model", "workload", "temp", "batch",
                     "tok/s off", "tok/s on", "speedup", "accept", "tok/ver", "rollback");
         for (const json& r : results)
           std::printf("%-22s %-40s %5.1f %5lld %10.0f %10.0f %7.2fx %6.1f%% %8.2f %8.2f%%\n",
                       r["model"].get<std::string>().c_str(), r["workload"].get<std::string>().c_str(),
                       r["temperature"].get<double>(), static_cast<long long>(r["batch"].get<int64_t>()),
                       r["off"]["decode_tokens_per_second"].get<double>(),
                       r["on"]["decode_tokens_per_second"].get<double>(), r["speedup"].get<double>(),
                       100 * r["on"]["acceptance"].get<double>(), r["on"]["tokens_per_verification"].get<double>(),
                       100 * r["on"]["rollback_fraction"].get<double>());
       });
  return absl::OkStatus();
}

}  // namespace interlace::bench
