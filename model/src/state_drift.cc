#include "interlace/model/state_drift.h"

#include <algorithm>
#include <cmath>

namespace interlace::model {

std::vector<float> turn_by_turn_logprobs(Model& m, std::span<const int32_t> tokens, int64_t turn,
                                         core::DType state_dtype) {
  const int64_t V = m.vocab_size(), T = static_cast<int64_t>(tokens.size());
  SequenceState s = m.new_sequence();
  std::vector<float> out(T, NAN), logits;
  for (int64_t at = 0; at + 1 < T; at += turn) {
    const int64_t n = std::min(turn, T - 1 - at);
    m.prefill(s, tokens.subspan(at, n), logits, /*all_logits=*/true);
    m.backend().log_softmax_gather(logits.data(), tokens.data() + at + 1, n, V, out.data() + at + 1);
    if (state_dtype == core::DType::kF32) continue;
    for (auto& l : s.lightning) {
      core::round_array(state_dtype, l.base.data(), l.base.size());
      core::round_array(state_dtype, l.delta.data(), l.delta.size());
    }
  }
  return out;
}

StateDrift measure_state_drift(Model& m, std::span<const int32_t> tokens, int64_t turn, core::DType state_dtype) {
  const std::vector<float> ref = turn_by_turn_logprobs(m, tokens, turn, core::DType::kF32);
  const std::vector<float> lp = turn_by_turn_logprobs(m, tokens, turn, state_dtype);
  const int64_t T = static_cast<int64_t>(tokens.size());
  StateDrift d;
  double sum = 0, last_sum = 0;
  int64_t n = 0, last_n = 0;
  for (int64_t t = 1; t < T; ++t) {
    const double e = std::fabs(double(lp[t]) - double(ref[t]));
    sum += e;
    d.max = std::max(d.max, e);
    ++n;
    if (t >= T * 3 / 4) {
      last_sum += e;
      ++last_n;
    }
  }
  d.mean = n ? sum / double(n) : 0;
  d.mean_last_quarter = last_n ? last_sum / double(last_n) : 0;
  return d;
}

}  // namespace interlace::model
