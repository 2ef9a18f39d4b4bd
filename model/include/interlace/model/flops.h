// What a token costs, counted from a config (2 FLOPs per multiply-add;
// matrix products only: norms, RoPE, activations and the softmax's
// exponentials are left out). Per layer and token at position t (attending
// to t tokens, or min(t, window) in a sliding-window layer):
//   softmax attention  2 (2 H Hq D + 2 H Hk D)  projections
//                      + 4 Hq D t_eff           scores and weighted values
//   lightning          2 (5 H Hq D)             q, k, v, gate and output
//                      + 4 Hq D^2               state update and readout (constant in t)
//   MLP                2 (3 H I), or a MoE's router 2 H E plus top_k experts' 2 (3 H I)
// plus the LM head's 2 H V per token. Training is 3x the forward (backward
// twice the forward's matrix products). This is what `interlace study`
// matches variants on, and where the softmax/lightning crossover comes from.
#pragma once

#include <cstdint>

#include "interlace/model/config.h"

namespace interlace::model {

// Forward FLOPs of the token at position t (1-based).
double forward_flops_at(const ModelConfig& c, int64_t t);
// Mean forward FLOPs per token over a sequence of `length` tokens.
double forward_flops_per_token(const ModelConfig& c, int64_t length);
// Training (forward + backward) FLOPs per token over sequences of `length`.
inline double training_flops_per_token(const ModelConfig& c, int64_t length) {
  return 3 * forward_flops_per_token(c, length);
}

// Bytes one sequence of `length` tokens holds for decoding (and what the
// prefix cache stores to restore it): a softmax layer's K and V rows,
// 2 Hk D values a token (a sliding-window layer only its window's); a
// lightning layer's state, base and in-block delta, 2 Hq D^2 values whatever
// the length. Memory per sequence vs context length, in `interlace study`.
double sequence_state_bytes(const ModelConfig& c, int64_t length, double kv_value_bytes, double state_value_bytes);

}  // namespace interlace::model
