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
      weight_swaps_(r.counter("interlace_engine_weight_swaps_total", "new weights versions swapped into the engine")),
      spec_drafted_(r.counter("interlace_spec_draft_tokens_total", "speculative decoding: draft tokens verified")),
      spec_accepted_(r.counter("interlace_spec_accepted_tokens_total",
                               "speculative decoding: draft tokens accepted (the target sampled the draft)")),
      spec_rejected_(r.counter("interlace_spec_rejected_tokens_total",
                               "speculative decoding: draft tokens rejected or left unused after a rejection")),
      spec_verifications_(r.counter("interlace_spec_verifications_total",
                                    "speculative decoding: verification chunks (pending token + drafts) run")) {}

void EngineMetrics::update(const rollout::Engine& e) {
  running_.set(double(e.running()));
  waiting_.set(double(e.waiting()));
  const rollout::EngineStats& s = e.stats();
  prefill_tokens_.set(double(s.prefill_tokens));
  decode_tokens_.set(double(s.decode_tokens));
  finished_.set(double(s.finished));
  aborted_.set(double(s.aborted));
  weight_swaps_.set(double(s.weight_swaps));
  spec_drafted_.set(double(s.spec_drafted));
  spec_accepted_.set(double(s.spec_accepted));
  spec_rejected_.set(double(s.spec_drafted - s.spec_accepted));
  spec_verifications_.set(double(s.spec_verifications));
}

}  // namespace interlace::rl
