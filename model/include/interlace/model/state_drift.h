// How far log-probs drift when a sequence's lightning states are stored in a
// low-precision dtype at every turn boundary (what the prefix cache does when
// its state dtype is bf16 or fp16), against the same tokens with the states
// kept: `interlace bench state-drift` (random weights) and `interlace study`
// (each hybrid's trained model on its own episodes) both measure it here.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "interlace/core/dtype.h"
#include "interlace/model/model.h"

namespace interlace::model {

// Log-probs of `tokens` fed in turns of `turn` tokens; after each turn the
// lightning states are rounded to `state_dtype` (stored and restored by the
// cache; kF32 leaves them as they are). out[0] is NaN (nothing predicts it).
std::vector<float> turn_by_turn_logprobs(Model& m, std::span<const int32_t> tokens, int64_t turn,
                                         core::DType state_dtype);

struct StateDrift {
  double mean = 0, max = 0, mean_last_quarter = 0;  // |log-prob difference| per token
};

// `tokens` scored with states rounded to `state_dtype` at every turn boundary
// against states kept in fp32.
StateDrift measure_state_drift(Model& m, std::span<const int32_t> tokens, int64_t turn, core::DType state_dtype);

}  // namespace interlace::model
