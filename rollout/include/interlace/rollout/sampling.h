// Per-request sampling settings of the engine. The draw itself is
// model::sample_token (one sampler for the engine and model::generate).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "interlace/model/sampling.h"

namespace interlace::rollout {

using model::TokenSample;

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy
  float top_p = 1.0f;        // nucleus: the smallest set of most likely tokens with mass >= top_p
  int64_t top_k = 0;         // 0: no limit
  uint64_t seed = 0;         // same seed, same prompt, same weights: same output
  int64_t max_new_tokens = 64;
  std::vector<int32_t> stop_token_ids;    // e.g. EOS, <|im_end|>; included in the output
  std::vector<std::string> stop_strings;  // needs the engine's tokenizer; the output ends with the match
  int64_t top_logprobs = 0;  // the most likely alternatives of each token, with raw log-probs (TokenSample::top); 0: none

  model::SamplingDistribution distribution() const { return {temperature, top_p, top_k}; }
};

inline TokenSample sample(std::span<const float> logits, const SamplingParams& params, int64_t vocab_limit,
                          std::mt19937_64& rng) {
  return model::sample_token(logits, params.distribution(), vocab_limit, rng);
}

}  // namespace interlace::rollout
