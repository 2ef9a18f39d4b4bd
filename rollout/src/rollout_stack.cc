#include "interlace/rollout/rollout_stack.h"

namespace interlace::rollout {

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

RolloutStack make_rollout_stack(std::shared_ptr<model::Model> model, const model::Tokenizer& tokenizer,
                                const model::ChatTemplate& tmpl, const RolloutStackOptions& options) {
  RolloutStack s;
  if (options.cache) s.cache = std::make_unique<cache::PrefixCache>(*model, *options.cache);
  s.engine = std::make_unique<Engine>(std::move(model), options.version,
                                      EngineConfig{.max_running = options.max_running,
                                                   .vocab_limit = tokenizer.vocab_size(),
                                                   .speculate = options.speculate},
                                      &tokenizer);
  if (s.cache) s.engine->set_cache(s.cache.get());
  s.loop = std::make_unique<AgentLoop>(*s.engine, tmpl, tokenizer, options.limits);
  return s;
}

std::vector<EpisodeSpec> group_episodes(Environment& env, uint64_t task_seed, int64_t group, int64_t group_size,
                                        uint64_t group_seed, const SamplingParams& sampling,
                                        const std::optional<AgentLimits>& limits) {
  std::vector<EpisodeSpec> out;
  for (int64_t s = 0; s < group_size; ++s) {
    EpisodeSpec e;
    e.episode = env.episode(task_seed);
    e.task_seed = task_seed;
    e.group = group;
    e.sample = s;
    e.sampling = sampling;
    e.sampling.seed = mix_seed(group_seed, static_cast<uint64_t>(s));
    e.limits = limits;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace interlace::rollout
