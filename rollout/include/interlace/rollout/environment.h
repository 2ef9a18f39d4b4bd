// Environments: where episodes come from, what the tools do, and the reward.
// An environment makes episodes from a seed (training tasks) and has a fixed
// held-out evaluation set; each episode can also produce a gold demonstration
// (the conversation a perfect agent would have) for SFT warm-up.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/model/chat_template.h"

namespace interlace::rollout {

// What the environment says after an assistant turn.
struct EnvReply {
  std::vector<model::Message> messages;  // tool results and/or a user message, appended in order
  bool done = false;                     // the episode is over (reward() is final)
};

class Episode {
 public:
  virtual ~Episode() = default;
  // The opening messages (system, user).
  virtual std::vector<model::Message> prompt() const = 0;
  // Called with each assistant turn, or the error parsing it (a malformed tool
  // call): the reply to append.
  virtual EnvReply on_assistant(const absl::StatusOr<model::Message>& turn) = 0;
  virtual double reward() const = 0;
  // The gold continuation of prompt(): assistant turns and the replies they get.
  virtual std::vector<model::Message> demonstration() const = 0;
};

class Environment {
 public:
  virtual ~Environment() = default;
  virtual std::string name() const = 0;
  // A training episode; the same seed gives the same task.
  virtual std::unique_ptr<Episode> episode(uint64_t seed) const = 0;
  // Seeds of the fixed held-out evaluation set (disjoint from training seeds,
  // which are below 2^62).
  std::vector<uint64_t> eval_seeds(int64_t n = 64) const;
};

// Registry by name. A spec is NAME or NAME:key=value,key=value (options are
// environment-specific, e.g. kv-retrieval:pairs=2000,hops=3); unknown names and
// options are errors that list what exists.
absl::StatusOr<std::unique_ptr<Environment>> make_environment(const std::string& spec);
std::vector<std::string> environment_names();

// The calculator tool's evaluator: integers, + - * /, parentheses, unary minus.
// Bounded (200 characters, nesting 32); overflow, division by zero and inexact
// division are errors with a message, never a crash.
absl::StatusOr<int64_t> evaluate_expression(const std::string& expression);

}  // namespace interlace::rollout
