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

// Greedy when temperature <= 0, else a draw from softmax(logits / temperature).
// Returns the token and, through logprob, its log-probability under the
// distribution actually sampled from.
int32_t sample_token(std::span<const float> logits, float temperature, std::mt19937_64& rng,
                     float* logprob = nullptr);

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
