#include "interlace/rl/engine_metrics.h"

namespace interlace::rl {

EngineMetrics::EngineMetrics(metrics::Registry& r)
    : running_(r.gauge("interlace_requests_running", "sequences the engine is decoding now")),
      waiting_(r.gauge("interlace_requests_waiting", "sequences queued for a slot in the engine")),
      prefill_tokens_(r.counter("interlace_prompt_tokens_prefilled_total",
                                "prompt tokens computed by prefill (not restored from the prefix cache)")),
      decode_tokens_(r.counter("interlace_decode_tokens_total", "tokens decoded")),
      finished_(r.counter("interlace_requests_finished_total", "sequences finished (stop token, stop string or length)")),
      aborted_(r.counter("interlace_requests_aborted_total", "sequences aborted before they finished")),
      weight_swaps_(r.counter("interlace_engine_weight_swaps_total", "new weights versions swapped into the engine")) {}

void EngineMetrics::update(const rollout::Engine& e) {
  running_.set(double(e.running()));
  waiting_.set(double(e.waiting()));
  const rollout::EngineStats& s = e.stats();
  prefill_tokens_.set(double(s.prefill_tokens));
  decode_tokens_.set(double(s.decode_tokens));
  finished_.set(double(s.finished));
  aborted_.set(double(s.aborted));
  weight_swaps_.set(double(s.weight_swaps));
}

}  // namespace interlace::rl
