// The agent loop: multi-turn episodes with tools and interleaved thinking,
// many at once through one Engine.
//
// An episode is one token sequence. A turn appends exactly the tokens the model
// generated (after the assistant header the template inserts), then the
// environment's reply, each message rendered and tokenised on its own. History
// is never re-tokenised, and <think> blocks stay in it. The loss mask is 1 for
// generated tokens only: never for the prompt, the assistant header, tool
// results or user replies.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "interlace/model/chat_template.h"
#include "interlace/rollout/engine.h"
#include "interlace/rollout/environment.h"

namespace interlace::rollout {

struct AgentLimits {
  int64_t max_turns = 8;             // assistant turns
  int64_t max_turn_tokens = 256;     // generated tokens in one turn
  int64_t max_episode_tokens = 4096; // the whole sequence
};

struct TurnSpan {
  std::string role;  // system, user, assistant, tool
  int64_t start = 0, end = 0;  // token range [start, end)
};

struct Trajectory {
  uint64_t task_seed = 0;
  int64_t group = 0, sample = 0;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;
  std::vector<float> logprobs;          // raw model log-probs of generated tokens; NaN elsewhere
  std::vector<float> sampled_logprobs;  // log-probs under the sampling distribution; NaN elsewhere
  std::vector<int64_t> versions;        // weights version per generated token; -1 elsewhere
  std::vector<TurnSpan> turns;
  double reward = 0;
  // done | max_turns | max_turn_tokens | max_episode_tokens | aborted
  std::string finish_reason;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache, over all turns
  int64_t generated_tokens() const;
};

struct EpisodeSpec {
  std::unique_ptr<Episode> episode;
  uint64_t task_seed = 0;
  int64_t group = 0, sample = 0;
  SamplingParams sampling;  // max_new_tokens and stop tokens are set per turn by the loop
  std::optional<AgentLimits> limits;  // this episode's (a task's); unset: the loop's
};

// Tokens and loss mask of an episode's gold demonstration (SFT data).
struct Demonstration {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;
};
Demonstration render_demonstration(const model::ChatTemplate& tmpl, const Episode& episode);

class AgentLoop {
 public:
  AgentLoop(Engine& engine, const model::ChatTemplate& tmpl, const model::Tokenizer& tokenizer, AgentLimits limits);
  // Runs every episode to its end, all concurrently; `on_finish` (optional)
  // sees each trajectory as it completes; `between_steps` (optional) runs
  // after every engine step (a service polls its sockets and swaps weights
  // there). Returns them in input order.
  std::vector<Trajectory> run(std::vector<EpisodeSpec> episodes,
                              const std::function<void(const Trajectory&)>& on_finish = {},
                              const std::function<void()>& between_steps = {});

 private:
  Engine& engine_;
  const model::ChatTemplate& tmpl_;
  AgentLimits limits_;
  std::vector<int32_t> stop_ids_;
};

}  // namespace interlace::rollout
