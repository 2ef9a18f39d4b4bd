// A rollout worker's engine figures for Prometheus, the ones operators of
// vLLM and SGLang watch: requests running and waiting, prompt tokens
// prefilled and restored from the prefix cache, tokens decoded, requests
// finished and aborted. Read from the engine's own cumulative statistics at
// each heartbeat; every series exists at 0 from the start.
#pragma once

#include "interlace/metrics/registry.h"
#include "interlace/rollout/engine.h"

namespace interlace::rl {

class EngineMetrics {
 public:
  explicit EngineMetrics(metrics::Registry& registry);
  void update(const rollout::Engine& engine);

 private:
  metrics::Value &running_, &waiting_, &prefill_tokens_, &decode_tokens_, &finished_, &aborted_, &weight_swaps_;
};

}  // namespace interlace::rl
