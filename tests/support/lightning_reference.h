// The float64 reference of lightning attention for one head, and the error
// measure its tests use (lightning_test for the CPU backend, cuda_backend_test
// for the GPU).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace interlace::testing {

// Naive o_t = sum_{j<=t} exp(-s(t-j)) (q_t.k_j) v_j in double, for one head.
// Also returns, per output row, the scale of the sum: max_d sum_j,i |decay q_ti k_ji v_jd|.
// Errors are measured relative to that scale, the precision any fp32
// summation of these terms can be held to (rows whose terms cancel would
// otherwise demand more than fp32 has).
inline void naive_head(const std::vector<float>& q, const std::vector<float>& k,
                const std::vector<float>& v, int64_t T, int64_t H, int64_t h, int64_t D,
                double slope, std::vector<float>& out, std::vector<double>& scale) {
  std::vector<double> acc(D), mag(D);
  for (int64_t t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    std::fill(mag.begin(), mag.end(), 0.0);
    for (int64_t j = 0; j <= t; ++j) {
      double dot = 0, dot_abs = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double p = double(q[(t * H + h) * D + d]) * k[(j * H + h) * D + d];
        dot += p;
        dot_abs += std::fabs(p);
      }
      const double decay = std::exp(-slope * double(t - j));
      for (int64_t d = 0; d < D; ++d) {
        acc[d] += decay * dot * v[(j * H + h) * D + d];
        mag[d] += decay * dot_abs * std::fabs(v[(j * H + h) * D + d]);
      }
    }
    for (int64_t d = 0; d < D; ++d) out[(t * H + h) * D + d] = float(acc[d]);
    scale[t * H + h] = *std::max_element(mag.begin(), mag.end());
  }
}

// Worst over rows of max_d |a - b| / scale[row].
inline double scaled_error(const std::vector<float>& a, const std::vector<float>& b,
                    const std::vector<double>& scale, int64_t D) {
  double worst = 0;
  for (size_t r = 0; r < scale.size(); ++r)
    for (int64_t d = 0; d < D; ++d) {
      if (!std::isfinite(a[r * D + d])) return INFINITY;  // NaN never passes
      worst = std::max(worst, std::fabs(double(a[r * D + d]) - b[r * D + d]) / std::max(scale[r], 1e-30));
    }
  return worst;
}

}  // namespace interlace::testing
