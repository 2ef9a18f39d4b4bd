// A rollout worker's engine figures for Prometheus, the ones operators of
// vLLM and SGLang watch: requests running and waiting, prompt tokens
// prefilled and restored from the prefix cache, tokens decoded, requests
// finished and aborted; speculative decoding's drafted, accepted and rejected tokens. Read from the engine's own cumulative statistics at
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
  metrics::Value &spec_drafted_, &spec_accepted_, &spec_rejected_, &spec_verifications_;
};

}  // namespace interlace::rl
