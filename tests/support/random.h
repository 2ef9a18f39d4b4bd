// Fresh random inputs for numeric tests. Each test draws a new seed and prints
// it on failure (gtest's SCOPED_TRACE) so a failing case can be replayed with
// INTERLACE_TEST_SEED.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace interlace::testing {

inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("INTERLACE_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

inline std::vector<float> normal_vector(std::mt19937_64& rng, size_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// max |a-b| / max(|b|, floor) over the whole array.
inline double max_rel_error(const float* a, const float* b, size_t n, double floor = 1e-30) {
  double num = 0, den = floor;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

// The worst over rows of (max |a-b| in the row) / (max |b| in the row).
inline double max_row_rel_error(const float* a, const float* b, size_t rows, size_t cols) {
  double worst = 0;
  for (size_t r = 0; r < rows; ++r)
    worst = std::max(worst, max_rel_error(a + r * cols, b + r * cols, cols, 1e-30));
  return worst;
}

}  // namespace interlace::testing

#include "interlace/kernels/backend.h"

namespace interlace::testing {

// A lightning state with its own storage.
struct OwnedLightningState {
  OwnedLightningState(int64_t heads, int64_t head_dim)
      : base(heads * head_dim * head_dim, 0.0f), delta(heads * head_dim * head_dim, 0.0f) {}
  kernels::LightningState ref() { return {base.data(), delta.data(), &steps}; }
  // The folded state S = r^steps base + delta.
  std::vector<float> folded(const kernels::LightningShape& s) {
    OwnedLightningState copy = *this;
    kernels::fold_lightning_state(s, copy.ref());
    return copy.base;
  }
  std::vector<float> base, delta;
  int64_t steps = 0;
};

}  // namespace interlace::testing
