// A slow, obviously-correct float64 forward pass written straight from the
// Hugging Face transformers definitions of LlamaForCausalLM, Qwen3ForCausalLM
// and MiniMaxForCausalLM. It reads weights by their checkpoint names and
// shares no code with interlace::model's forward, so the two can disagree.
#pragma once

#include <vector>

#include "interlace/model/config.h"
#include "interlace/model/weights.h"

namespace interlace::testing {

// log p(token_i | tokens before i) for i >= 1 (entry 0 unused), in float64;
// p = softmax(logits / temperature).
std::vector<double> reference_logprobs(const model::ModelConfig& config, const model::NamedTensors& weights,
                                       const std::vector<int32_t>& tokens, double temperature = 1.0);

}  // namespace interlace::testing
