// interlace rollout: agent episodes of an environment with a model, written as
// trajectories (JSONL); interlace env demo: gold demonstrations as SFT data.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/cache/prefix_cache.h"
#include "interlace/core/dtype.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/model.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rollout/agent.h"
#include "interlace/rollout/prefill_bound.h"
#include "interlace/rollout/environment.h"
#include "interlace/rollout/rollout_stack.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

json floats_or_null(const std::vector<float>& v) {
  json a = json::array();
  for (float x : v) a.push_back(std::isnan(x) ? json(nullptr) : json(x));
  return a;
}

json trajectory_json(const rollout::Trajectory& t) {
  json versions = json::array(), turns = json::array();
  for (int64_t v : t.versions) versions.push_back(v < 0 ? json(nullptr) : json(v));
  for (const auto& s : t.turns) turns.push_back({{"role", s.role}, {"start", s.start}, {"end", s.end}});
  return {{"tokens", t.tokens},
          {"logprobs", floats_or_null(t.logprobs)},
          {"sampled_logprobs", floats_or_null(t.sampled_logprobs)},
          {"loss_mask", t.loss_mask},
          {"turns", turns},
          {"reward", t.reward},
          {"policy_versions", versions},
          {"finish_reason", t.finish_reason},
          {"cached_tokens", t.cached_tokens},
          {"task_seed", t.task_seed},
          {"group", t.group},
          {"sample", t.sample}};
}

struct RolloutArgs {
  std::string model, env, out, precision = "fp32";
  int64_t prompts = 8, group_size = 1, max_turns = 4, max_new_tokens = 128, max_episode_tokens = 4096;
  float temperature = 1.0f, top_p = 1.0f;
  int64_t top_k = 0;
  uint64_t seed = 0;
  bool eval = false, no_cache = false;
  int64_t cache_bytes = 0, cache_blocks = 0, cache_states = 0;  // 0: the machine default; no caps
  std::string state_dtype;  // empty: the precision profile's state dtype
  std::string speculate = "off";
};

int run_rollout(const RolloutArgs& a) {
  auto env = rollout::make_environment(a.env);
  if (!env.ok()) return fail(absl::StrCat("--env: ", env.status().message()));
  auto precision = model::parse_precision(a.precision);
  if (!precision.ok()) return fail(absl::StrCat("--precision: ", precision.status().message()));
  auto loaded = model::Model::load(a.model, *precision);
  if (!loaded.ok()) return fail(loaded.status());
  std::shared_ptr<model::Model> m(std::move(*loaded));
  auto tok = model::load_tokenizer(a.model);
  if (!tok.ok()) return fail(tok.status());
  auto tmpl = model::ChatTemplate::create(**tok);
  if (!tmpl.ok()) return fail(absl::StrCat(a.model, ": ", tmpl.status().message()));
  auto speculate = rollout::parse_speculate(a.speculate);
  if (!speculate.ok()) return fail(absl::StrCat("--speculate: ", speculate.status().message()));
  if (auto s = rollout::load_draft_model(*speculate, *m, *precision); !s.ok()) return fail(s);
  std::ofstream out(a.out);
  if (!out) return fail(absl::StrCat(a.out, ": cannot write"));

  // Cached states are stored in the profile's state dtype unless told otherwise.
  auto state_dtype = a.state_dtype.empty() ? absl::StatusOr<core::DType>(precision->state)
                                           : core::parse_dtype(a.state_dtype);
  if (!state_dtype.ok()) return fail(absl::StrCat("--cache-state-dtype: ", state_dtype.status().message()));
  std::optional<cache::CacheConfig> cache;
  if (!a.no_cache)
    cache = cache::CacheConfig{.max_bytes = a.cache_bytes,
                               .max_kv_blocks = a.cache_blocks,
                               .max_states = a.cache_states,
                               .state_dtype = *state_dtype};
  rollout::RolloutStack stack = rollout::make_rollout_stack(
      m, **tok, *tmpl,
      {.max_running = 32,
       .cache = cache,
       .limits = {.max_turns = a.max_turns, .max_turn_tokens = a.max_new_tokens,
                  .max_episode_tokens = a.max_episode_tokens},
       .speculate = *speculate});
  const std::vector<uint64_t> eval = (*env)->eval_seeds(a.prompts);
  std::vector<rollout::EpisodeSpec> specs;
  rollout::SamplingParams sampling;
  sampling.temperature = a.temperature;
  sampling.top_p = a.top_p;
  sampling.top_k = a.top_k;
  for (int64_t p = 0; p < a.prompts; ++p) {
    const uint64_t task_seed = a.eval ? eval[p] : a.seed + static_cast<uint64_t>(p);
    // The rollout stack's seed rule, with --seed as the salt (a worker uses the attempt).
    for (auto& e : rollout::group_episodes(**env, task_seed, p, a.group_size, rollout::group_seed(task_seed, a.seed),
                                           sampling))
      specs.push_back(std::move(e));
  }
  const int64_t total = static_cast<int64_t>(specs.size());
  std::fprintf(stderr, "rollout: %lld episodes of %s (%lld prompts x %lld samples) on %s\n",
               static_cast<long long>(total), a.env.c_str(), static_cast<long long>(a.prompts),
               static_cast<long long>(a.group_size), a.model.c_str());
  const auto t0 = Clock::now();
  auto last = t0;
  int64_t done = 0, generated = 0;
  double reward_sum = 0;
  auto trajectories = stack.loop->run(std::move(specs), [&](const rollout::Trajectory& t) {
    ++done;
    generated += t.generated_tokens();
    reward_sum += t.reward;
    const auto now = Clock::now();
    if (now - last >= std::chrono::seconds(1) || done == total) {
      const double s = std::chrono::duration<double>(now - t0).count();
      std::fprintf(stderr, "  %lld/%lld episodes, %.0f generated tok/s, mean reward %.3f\n",
                   static_cast<long long>(done), static_cast<long long>(total), generated / s, reward_sum / done);
      last = now;
    }
  });
  for (const auto& t : trajectories) out << trajectory_json(t).dump() << "\n";
  if (!out.flush()) return fail(absl::StrCat(a.out, ": write failed"));
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::map<std::string, int64_t> reasons;
  for (const auto& t : trajectories) ++reasons[t.finish_reason];
  std::string why;
  for (const auto& [r, n] : reasons) absl::StrAppend(&why, why.empty() ? "" : ", ", r, " ", n);
  std::printf("%lld episodes in %.1f s: %.2f episodes/s, %.0f generated tokens/s, mean reward %.3f\n"
              "finish: %s\n",
              static_cast<long long>(total), s, total / s, generated / s, total ? reward_sum / total : 0.0,
              why.c_str());
  if (!stack.cache) {
    std::printf("prefix cache: off\n");
  } else {
    const cache::CacheCounters& cc = stack.cache->counters();
    std::printf("prefix cache: hit rate %.1f%% (%lld of %lld prompt tokens), %lld KV blocks + %lld states held "
                "(%.1f MB KV, %.1f MB state, budget %.0f MB), evictions: %lld for the budget, %lld for a count cap\n",
                cc.query_tokens ? 100.0 * cc.hit_tokens / cc.query_tokens : 0.0, static_cast<long long>(cc.hit_tokens),
                static_cast<long long>(cc.query_tokens), static_cast<long long>(cc.kv_blocks),
                static_cast<long long>(cc.states), cc.kv_bytes / 1e6, cc.state_bytes / 1e6,
                stack.cache->max_bytes() / 1e6, static_cast<long long>(cc.evicted_for_bytes),
                static_cast<long long>(cc.evicted_for_count));
  }
  // How far from ideal: prefilled prompt tokens against the fewest any cache
  // could have prefilled for these episodes (rollout/prefill_bound.h).
  const int64_t bound = rollout::prefill_lower_bound(trajectories);
  const int64_t prefilled = stack.engine->stats().prefill_tokens;
  std::printf("prefill: %lld tokens, lower bound %lld (%.2fx)\n", static_cast<long long>(prefilled),
              static_cast<long long>(bound), bound ? double(prefilled) / double(bound) : 0.0);
  if (speculate->enabled()) {
    const rollout::EngineStats& es = stack.engine->stats();
    std::printf("speculation: %s, %lld drafted, %lld accepted (%.1f%%), %.2f tokens per verification\n",
                rollout::describe(*speculate).c_str(), static_cast<long long>(es.spec_drafted),
                static_cast<long long>(es.spec_accepted),
                es.spec_drafted ? 100.0 * es.spec_accepted / es.spec_drafted : 0.0,
                es.spec_verifications ? double(es.spec_emitted) / es.spec_verifications : 0.0);
  }
  std::printf("trajectories written to %s\n", a.out.c_str());
  return 0;
}

struct DemoArgs {
  std::string env, out, model;
  int64_t n = 64;
  uint64_t seed = 0;
  bool eval = false;
};

int run_demo(const DemoArgs& a) {
  auto env = rollout::make_environment(a.env);
  if (!env.ok()) return fail(absl::StrCat("--env: ", env.status().message()));
  std::unique_ptr<model::Tokenizer> tok = std::make_unique<model::ByteTokenizer>();
  if (!a.model.empty()) {
    auto t = model::load_tokenizer(a.model);
    if (!t.ok()) return fail(t.status());
    tok = std::move(*t);
  }
  auto tmpl = model::ChatTemplate::create(*tok);
  if (!tmpl.ok()) return fail(tmpl.status());
  std::ofstream out(a.out);
  if (!out) return fail(absl::StrCat(a.out, ": cannot write"));
  const std::vector<uint64_t> eval = (*env)->eval_seeds(a.n);
  int64_t tokens = 0, trained = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    const uint64_t seed = a.eval ? eval[i] : a.seed + static_cast<uint64_t>(i);
    const rollout::Demonstration d = rollout::render_demonstration(*tmpl, *(*env)->episode(seed));
    out << json{{"tokens", d.tokens}, {"loss_mask", d.loss_mask}, {"task_seed", seed}}.dump() << "\n";
    tokens += static_cast<int64_t>(d.tokens.size());
    for (uint8_t m : d.loss_mask) trained += m;
  }
  if (!out.flush()) return fail(absl::StrCat(a.out, ": write failed"));
  std::printf("%lld demonstrations of %s (%lld tokens, %lld trained) written to %s\n", static_cast<long long>(a.n),
              a.env.c_str(), static_cast<long long>(tokens), static_cast<long long>(trained), a.out.c_str());
  return 0;
}

}  // namespace

void add_rollout_commands(CLI::App& app, Action& action) {
  const std::string envs = absl::StrJoin(rollout::environment_names(), ", ");
  auto r = std::make_shared<RolloutArgs>();
  CLI::App* ro = app.add_subcommand(
      "rollout", "Run agent episodes of an environment with a model and write one trajectory per line:\n"
                 "tokens, logprobs (raw model log-probs of generated tokens, null elsewhere),\n"
                 "sampled_logprobs, loss_mask, turns, reward, policy_versions, finish_reason,\n"
                 "cached_tokens. Example:\n"
                 "  interlace rollout --model /tmp/tiny --env calculator --prompts 8 --group-size 4 --out traj.jsonl");
  ro->add_option("--model", r->model, "model directory (with its tokenizer)")->required();
  ro->add_option("--env", r->env, "environment: " + envs + " (options as NAME:key=value,...)")->required();
  ro->add_option("--out", r->out, "JSONL file to write")->required();
  ro->add_option("--prompts", r->prompts, "tasks")->capture_default_str()->check(CLI::PositiveNumber);
  ro->add_option("--group-size", r->group_size, "samples per task")->capture_default_str()->check(CLI::PositiveNumber);
  ro->add_option("--max-turns", r->max_turns, "assistant turns per episode")->capture_default_str();
  ro->add_option("--max-new-tokens", r->max_new_tokens, "tokens per turn")->capture_default_str();
  ro->add_option("--max-episode-tokens", r->max_episode_tokens, "tokens per episode")->capture_default_str();
  ro->add_option("--temperature", r->temperature, "sampling temperature; 0 is greedy")->capture_default_str();
  ro->add_option("--top-p", r->top_p, "nucleus sampling mass")->capture_default_str();
  ro->add_option("--top-k", r->top_k, "sample among the k most likely; 0: all")->capture_default_str();
  ro->add_option("--seed", r->seed, "task and sampling seed")->capture_default_str();
  ro->add_option("--precision", r->precision, "precision profile of the rollout")->capture_default_str();
  ro->add_flag("--eval", r->eval, "use the environment's fixed held-out tasks");
  ro->add_option("--speculate", r->speculate,
                 "speculative decoding: off, ngram[:k=4,max=4,min=3] (drafts looked up in the episode's own\n"
                 "history) or model:DIR[,k=4] (a draft model with the same tokenizer); the trajectories are\n"
                 "token for token and log-prob for log-prob the same as without")
      ->capture_default_str();
  ro->add_flag("--no-cache", r->no_cache, "disable the prefix/state cache");
  ro->add_option("--cache-bytes", r->cache_bytes,
                 "memory the cache may hold, KV blocks and states together (default 0: 1/8 of this\n"
                 "machine's memory, 64 MiB..8 GiB)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  ro->add_option("--cache-blocks", r->cache_blocks, "cap on KV blocks (16 tokens each); 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  ro->add_option("--cache-states", r->cache_states, "cap on lightning-state checkpoints; 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  ro->add_option("--cache-state-dtype", r->state_dtype,
                 "dtype states are cached in: f32, bf16, f16 (default: the precision profile's state dtype)");
  ro->callback([&action, r] { action = [r] { return run_rollout(*r); }; });

  CLI::App* env = app.add_subcommand("env", "Environments");
  env->require_subcommand(1);
  auto d = std::make_shared<DemoArgs>();
  CLI::App* demo = env->add_subcommand(
      "demo", "Write gold demonstration episodes as SFT data ({\"tokens\", \"loss_mask\"} per line,\n"
              "the format of interlace train sft). Example:\n"
              "  interlace env demo --env calculator --n 256 --out demos.jsonl");
  demo->add_option("--env", d->env, "environment: " + envs)->required();
  demo->add_option("--out", d->out, "JSONL file to write")->required();
  demo->add_option("--n", d->n, "episodes")->capture_default_str()->check(CLI::PositiveNumber);
  demo->add_option("--seed", d->seed, "first task seed")->capture_default_str();
  demo->add_option("--model", d->model, "use this model's tokenizer (default: the byte tokenizer)");
  demo->add_flag("--eval", d->eval, "the environment's held-out tasks instead");
  demo->callback([&action, d] { action = [d] { return run_demo(*d); }; });
}

}  // namespace interlace::cli
