// interlace bench cache: prefill work of a GRPO-shaped multi-turn rollout
// against the fewest prompt tokens any cache could have prefilled (the lower
// bound, rollout/prefill_bound.h), with the prefix cache at its defaults and
// without it, side by side in one run, for each model and environment.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "interlace/bench/bench_util.h"
#include "interlace/bench/suites.h"
#include "interlace/core/status.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/model.h"
#include "interlace/model/model_init.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rollout/prefill_bound.h"
#include "interlace/rollout/rollout_stack.h"

namespace interlace::bench {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


absl::StatusOr<json> run_workload(const std::string& dir, const std::string& env_spec, bool with_cache,
                                  const CacheBenchArgs& a) {
  INTERLACE_ASSIGN_OR_RETURN(auto env, rollout::make_environment(env_spec));
  INTERLACE_ASSIGN_OR_RETURN(auto loaded, model::Model::load(dir, model::PrecisionProfile{}));
  std::shared_ptr<model::Model> m(std::move(loaded));
  INTERLACE_ASSIGN_OR_RETURN(auto tok, model::load_tokenizer(dir));
  INTERLACE_ASSIGN_OR_RETURN(auto tmpl, model::ChatTemplate::create(*tok));
  std::optional<cache::CacheConfig> cache;
  if (with_cache) cache = cache::CacheConfig{.max_bytes = a.cache_bytes};
  rollout::RolloutStack stack = rollout::make_rollout_stack(
      m, *tok, tmpl,
      {.max_running = 32,
       .cache = cache,
       .limits = {.max_turns = a.max_turns, .max_turn_tokens = a.max_new_tokens, .max_episode_tokens = 4096}});
  rollout::SamplingParams sampling;
  sampling.temperature = static_cast<float>(a.temperature);
  std::vector<rollout::EpisodeSpec> specs;
  for (int64_t p = 0; p < a.prompts; ++p) {
    const uint64_t task_seed = a.seed + static_cast<uint64_t>(p);
    for (auto& e : rollout::group_episodes(*env, task_seed, p, a.group_size, rollout::group_seed(task_seed, a.seed),
                                           sampling))
      specs.push_back(std::move(e));
  }
  const auto t0 = Clock::now();
  const std::vector<rollout::Trajectory> episodes = stack.loop->run(std::move(specs));
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t prefilled = stack.engine->stats().prefill_tokens;
  const int64_t bound = rollout::prefill_lower_bound(episodes);
  json r = {{"cache", with_cache},
            {"episodes", episodes.size()},
            {"seconds", seconds},
            {"episodes_per_second", seconds > 0 ? double(episodes.size()) / seconds : 0.0},
            {"prefilled_tokens", prefilled},
            {"lower_bound_tokens", bound},
            {"over_lower_bound", bound > 0 ? double(prefilled) / double(bound) : 0.0}};
  if (stack.cache) {
    const cache::CacheCounters& c = stack.cache->counters();
    r["prompt_tokens"] = c.query_tokens;
    r["hit_rate"] = c.query_tokens ? double(c.hit_tokens) / double(c.query_tokens) : 0.0;
    r["cache_bytes_held"] = c.bytes();
    r["cache_budget_bytes"] = stack.cache->max_bytes();
    r["evicted_for_bytes"] = c.evicted_for_bytes;
    r["evicted_for_count"] = c.evicted_for_count;
  } else {
    r["prompt_tokens"] = prefilled;  // without a cache every prompt token is prefilled
  }
  return r;
}

}  // namespace

absl::Status run_bench_cache(const Common& c, const CacheBenchArgs& a) {
  char tmpl[] = "/tmp/interlace-bench-cache-XXXXXX";
  if (!::mkdtemp(tmpl)) return absl::InternalError("bench cache: cannot make a temporary directory");
  const std::string tmp = tmpl;
  json results = json::array();
  absl::Status status;
  for (const std::string& name : a.models) {
    auto dir = model_dir_or_example(name, tmp);
    if (!dir.ok()) {
      status = dir.status();
      break;
    }
    for (const std::string& env : a.envs) {
      json row = {{"model", name}, {"env", env}};
      for (bool with_cache : {true, false}) {
        std::fprintf(stderr, "bench cache: %s on %s, cache %s...\n", name.c_str(), env.c_str(), with_cache ? "on" : "off");
        auto r = run_workload(*dir, env, with_cache, a);
        if (!r.ok()) {
          status = r.status();
          break;
        }
        row[with_cache ? "with_cache" : "without_cache"] = *r;
      }
      if (!status.ok()) break;
      results.push_back(row);
    }
    if (!status.ok()) break;
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!status.ok()) return status;
  emit(c, "cache",
       {{"models", a.models}, {"envs", a.envs}, {"prompts", a.prompts}, {"group_size", a.group_size},
        {"max_turns", a.max_turns}, {"max_new_tokens", a.max_new_tokens}, {"temperature", a.temperature},
        {"seed", a.seed}, {"cache_bytes", a.cache_bytes}},
       results, [&] {
         std::printf("%-26s %-34s %10s %10s %10s %7s %9s %8s %8s\n", "model", "env", "prompt", "prefilled", "bound",
                     "ratio", "cache MB", "ep/s", "ep/s off");
         for (const json& r : results) {
           const json& on = r["with_cache"];
           const json& off = r["without_cache"];
           std::printf("%-26s %-34s %10lld %10lld %10lld %6.2fx %9.1f %8.2f %8.2f\n",
                       r["model"].get<std::string>().c_str(), r["env"].get<std::string>().c_str(),
                       static_cast<long long>(on["prompt_tokens"].get<int64_t>()),
                       static_cast<long long>(on["prefilled_tokens"].get<int64_t>()),
                       static_cast<long long>(on["lower_bound_tokens"].get<int64_t>()),
                       on["over_lower_bound"].get<double>(), on["cache_bytes_held"].get<double>() / 1e6,
                       on["episodes_per_second"].get<double>(), off["episodes_per_second"].get<double>());
         }
       });
  return absl::OkStatus();
}

}  // namespace interlace::bench
