// Per-request sampling: temperature, top-k, top-p and a seed. For every token
// it returns two log-probabilities, because RL needs both and they differ:
//   sampled_logprob  log q(token), q = the distribution actually sampled from
//                    (temperature, top-k, top-p applied and renormalised; 0 when greedy)
//   raw_logprob      log p(token), p = the model's softmax over the whole vocabulary
//                    at temperature 1: what the learner recomputes and compares.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace interlace::rollout {

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy
  float top_p = 1.0f;        // nucleus: the smallest set of most likely tokens with mass >= top_p
  int64_t top_k = 0;         // 0: no limit
  uint64_t seed = 0;         // same seed, same prompt, same weights: same output
  int64_t max_new_tokens = 64;
  std::vector<int32_t> stop_token_ids;  // e.g. EOS, <|im_end|>; included in the output
  std::vector<std::string> stop_strings;  // needs the engine's tokenizer; the output ends with the match
};

struct TokenSample {
  int32_t token = 0;
  float sampled_logprob = 0;
  float raw_logprob = 0;
};

// `logits` covers the model's vocabulary; only ids below `vocab_limit` (0: all)
// can be sampled (a model's vocabulary is often padded past its tokenizer's).
TokenSample sample(std::span<const float> logits, const SamplingParams& params, int64_t vocab_limit,
                   std::mt19937_64& rng);

}  // namespace interlace::rollout
