// Speculative decoding: where drafts come from and how they are asked for.
// The engine verifies a sequence's pending token and up to k drafts in one
// forward (model::Model::Chunk::verify), samples each position from the target
// model exactly as decoding would (same kernels, same random draws) and
// accepts drafts while the sampled token equals the draft; the first sampled
// token that differs is kept as the correction, and the sequence is cut back
// to it (model::Model::rollback_verified). Drafts are point masses (n-gram
// lookup, or the draft model's greedy choice), for which the standard
// rejection rule (accept d with probability min(1, p(d)/q(d)) = p(d), else
// sample from the residual p restricted to tokens other than d) is exactly
// "sample from p, accept if it is d": so the output is not only distributed as
// the target's, it is token for token what decoding without speculation gives
// for the same seed, log-probs and versions included.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/model/model.h"

namespace interlace::rollout {

struct SpeculativeConfig {
  enum class Method { kNone, kNgram, kModel, kCallback };
  Method method = Method::kNone;
  int64_t k = 4;  // drafts per verification, at most
  // Prompt lookup: the longest suffix of the history (ngram_max tokens down to
  // ngram_min) that occurred before proposes the tokens that followed it.
  // min 3 by default: on SFT'd agent episodes (calculator, kv-retrieval) a
  // one-token match proposed drafts that were accepted 8-16% of the time
  // and slowed decoding to 0.46-0.88x; three-token matches were accepted
  // 28-48% of the time (interlace bench speculative, issue 22's note).
  int64_t ngram_max = 4, ngram_min = 3;
  std::string draft_path = {};                // kModel: the draft model's directory (parse_speculate)
  std::shared_ptr<model::Model> draft_model = {};  // kModel: loaded by the caller; same vocabulary
  // kCallback: drafts from the embedding program (a test, an external
  // drafter): given the history (its last token is the pending one) and the
  // most drafts that fit, returns up to that many.
  std::function<std::vector<int32_t>(std::span<const int32_t> history, int64_t room)> draft_fn = {};
  bool enabled() const { return method != Method::kNone && k > 0; }
};

// "off", "ngram", "ngram:k=4", "ngram:k=6,max=3,min=2", "model:PATH", "model:PATH,k=4".
// The draft model is not loaded here (draft_path is set; see load_draft_model).
absl::StatusOr<SpeculativeConfig> parse_speculate(const std::string& spec);
std::string describe(const SpeculativeConfig& config);
// Loads config.draft_path under `precision` and checks it shares the target's vocabulary.
absl::Status load_draft_model(SpeculativeConfig& config, const model::Model& target,
                              const model::PrecisionProfile& precision);

// Prompt lookup over `history` (its last token is the one about to be fed):
// up to k tokens that followed the most recent earlier occurrence of the
// longest matching suffix; empty when nothing matches.
std::vector<int32_t> ngram_drafts(std::span<const int32_t> history, int64_t k, int64_t ngram_max, int64_t ngram_min);

// A draft model's greedy continuation of `history`, k tokens. `state` is the
// draft model's state for this sequence: it catches up on the history it has
// not seen and is left at the history's end (drafted tokens forgotten).
std::vector<int32_t> model_drafts(model::Model& draft, model::SequenceState& state, std::span<const int32_t> history,
                                  int64_t k, int64_t vocab_limit);

}  // namespace interlace::rollout
