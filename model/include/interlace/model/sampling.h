// Token sampling and a simple single-sequence generation loop. (The batched
// engine with continuous batching lives in rollout/.)
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "interlace/model/model.h"

namespace interlace::model {

// The distribution a token is drawn from: softmax(logits / temperature) cut to
// the top_k most likely tokens and then to the smallest set holding top_p of
// the mass, renormalised. Greedy when temperature <= 0 or top_k == 1.
struct SamplingDistribution {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int64_t top_k = 0;  // 0: no limit
};

// Two log-probabilities per token, because RL needs both and they differ:
//   sampled_logprob  log q(token), q the distribution above (0 when greedy)
//   raw_logprob      log p(token), the model's softmax over the whole vocabulary
//                    at temperature 1
struct TokenSample {
  int32_t token = 0;
  float sampled_logprob = 0;
  float raw_logprob = 0;
  // When asked for (OpenAI's top_logprobs): the most likely tokens and their
  // raw log-probs, most likely first (ties: the lower id).
  std::vector<std::pair<int32_t, float>> top;
};

// `logits` covers the model's vocabulary; only ids below `vocab_limit` (0: all)
// can be drawn (a model's vocabulary is often padded past its tokenizer's).
TokenSample sample_token(std::span<const float> logits, const SamplingDistribution& distribution,
                         int64_t vocab_limit, std::mt19937_64& rng);

// Fills sample.top with the K most likely of the first VOCAB_LIMIT (0: all)
// tokens, normalised as sample.raw_logprob is (the sampled token's own value
// is raw_logprob itself, so the two never disagree).
void fill_top_logprobs(std::span<const float> logits, int64_t vocab_limit, int64_t k, TokenSample& sample);

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  float temperature = 1.0f;
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;
  // Sample only ids below this (0 = the whole vocabulary): a model's vocab_size is
  // often padded past the tokenizer's last token.
  int64_t vocab_limit = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;     // generated tokens (a stop token included)
  std::vector<float> logprobs;     // per generated token, under the sampling distribution
  bool stopped = false;            // ended on a stop token (else max_new_tokens)
};

// Prefills the prompt, then decodes; on_token (optional) sees each token as it comes.
GenerateResult generate(Model& model, std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token = {});

}  // namespace interlace::model
