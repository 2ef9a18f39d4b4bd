#include "interlace/model/flops.h"

#include <algorithm>

namespace interlace::model {
namespace {

// The softmax layers' attention FLOPs at position t; `constant` gets the rest.
double attended_sum(const ModelConfig& c, int64_t t, double& constant) {
  const double H = double(c.hidden_size), Hq = double(c.num_attention_heads), Hk = double(c.num_key_value_heads),
               D = double(c.head_dim), I = double(c.intermediate_size), V = double(c.vocab_size);
  double attention = 0;
  constant = 2 * H * V;  // LM head
  for (int64_t l = 0; l < static_cast<int64_t>(c.layer_types.size()); ++l) {
    if (c.layer_types[l] == LayerKind::kLinearAttention) {
      constant += 2 * 5 * H * Hq * D + 4 * Hq * D * D;
    } else {
      constant += 2 * (2 * H * Hq * D + 2 * H * Hk * D);
      const int64_t window = c.window_for_layer(l);
      const double seen = double(window > 0 ? std::min(t, window) : t);
      attention += 4 * Hq * D * seen;
    }
    constant += c.is_moe() ? 2 * H * double(c.num_local_experts) + double(c.num_experts_per_tok) * 2 * 3 * H * I
                           : 2 * 3 * H * I;
  }
  return attention;
}

}  // namespace

double forward_flops_at(const ModelConfig& c, int64_t t) {
  double constant = 0;
  const double attention = attended_sum(c, t, constant);
  return constant + attention;
}

double forward_flops_per_token(const ModelConfig& c, int64_t length) {
  if (length <= 0) return 0;
  double sum = 0;
  for (int64_t t = 1; t <= length; ++t) sum += forward_flops_at(c, t);
  return sum / double(length);
}

double sequence_state_bytes(const ModelConfig& c, int64_t length, double kv_value_bytes, double state_value_bytes) {
  const double Hq = double(c.num_attention_heads), Hk = double(c.num_key_value_heads), D = double(c.head_dim);
  double bytes = 0;
  for (int64_t l = 0; l < static_cast<int64_t>(c.layer_types.size()); ++l) {
    if (c.layer_types[l] == LayerKind::kLinearAttention) {
      bytes += 2 * Hq * D * D * state_value_bytes;
    } else {
      const int64_t window = c.window_for_layer(l);
      const double rows = double(window > 0 ? std::min(length, window) : length);
      bytes += 2 * Hk * D * rows * kv_value_bytes;
    }
  }
  return bytes;
}

}  // namespace interlace::model
