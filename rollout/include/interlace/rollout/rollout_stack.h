// One way to assemble a rollout: engine + prefix cache + agent loop from a
// model and its tokenizer, and the episodes of a sampling group with the one
// seed rule. The `interlace rollout` command and the rollout worker both
// build theirs here, so a worker's episodes are the ones the CLI would run.
//
// Seeds: a group samples from group_seed(task_seed, salt), where the salt is
// the attempt for a worker (a re-issued group samples afresh) and --seed for
// the CLI; sample s of the group samples with mix_seed(group seed, s).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "interlace/cache/prefix_cache.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/model.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rollout/agent.h"
#include "interlace/rollout/engine.h"
#include "interlace/rollout/environment.h"

namespace interlace::rollout {

// splitmix64 of a combination of a and b: well-mixed, platform-independent.
uint64_t mix_seed(uint64_t a, uint64_t b);
inline uint64_t group_seed(uint64_t task_seed, uint64_t salt) { return mix_seed(task_seed, salt); }

struct RolloutStackOptions {
  int64_t version = 0;          // the weights version the engine starts at
  int64_t max_running = 32;     // sequences decoded together
  std::optional<cache::CacheConfig> cache;  // unset: no prefix cache
  AgentLimits limits;
  SpeculativeConfig speculate = {};  // off unless set (a draft model loaded by the caller)
};

// Owns the parts; the engine holds the model, the loop refers to the engine,
// the template and the tokenizer (which must outlive the stack).
struct RolloutStack {
  std::unique_ptr<cache::PrefixCache> cache;  // null without a cache
  std::unique_ptr<Engine> engine;
  std::unique_ptr<AgentLoop> loop;
};

RolloutStack make_rollout_stack(std::shared_ptr<model::Model> model, const model::Tokenizer& tokenizer,
                                const model::ChatTemplate& tmpl, const RolloutStackOptions& options);

// The `group_size` episodes of task `task_seed` as group `group`, sample s
// sampling with mix_seed(group_seed, s). `limits`: the task's own (unset: the loop's).
std::vector<EpisodeSpec> group_episodes(Environment& env, uint64_t task_seed, int64_t group, int64_t group_size,
                                        uint64_t group_seed, const SamplingParams& sampling,
                                        const std::optional<AgentLimits>& limits = std::nullopt);

}  // namespace interlace::rollout
