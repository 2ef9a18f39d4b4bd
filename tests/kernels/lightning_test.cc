// Lightning attention: blocked (fast CPU) == recurrent (fast CPU decode) ==
// the naive O(n^2) sum evaluated in float64, to 1e-5 relative, for lengths up
// to 8K, including lengths that are not multiples of the block size, with
// the decay slopes of the first and of the last layer of a model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "interlace/kernels/backend.h"
#include "support/lightning_reference.h"
#include "support/random.h"

namespace interlace::kernels {
namespace {

using interlace::testing::fresh_seed;
using interlace::testing::max_row_rel_error;

using interlace::testing::naive_head;
using interlace::testing::scaled_error;

struct Case {
  int64_t tokens;
  int64_t heads;
  int64_t head_dim;
};

class LightningAgreement : public ::testing::TestWithParam<Case> {};

TEST_P(LightningAgreement, BlockedRecurrentNaive) {
  const Case c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t T = c.tokens, H = c.heads, D = c.head_dim, layers = 8;
  // q, k, v as the model produces them: silu of a projection, so mostly positive.
  auto gen = [&] {
    auto x = interlace::testing::normal_vector(rng, T * H * D);
    for (auto& e : x) e = e / (1.0f + std::exp(-e));
    return x;
  };
  auto q = gen(), k = gen(), v = gen();
  for (int64_t layer : {int64_t{0}, layers - 1}) {
    SCOPED_TRACE("layer " + std::to_string(layer) + " tokens " + std::to_string(T));
    std::vector<float> slopes(H);
    for (int64_t h = 0; h < H; ++h) slopes[h] = lightning_slope(h, H, layer, layers);
    LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 256};

    std::vector<float> naive(T * H * D);
    std::vector<double> scale(T * H);
    for (int64_t h = 0; h < H; ++h) naive_head(q, k, v, T, H, h, D, slopes[h], naive, scale);

    std::vector<float> blocked(T * H * D);
    interlace::testing::OwnedLightningState state(H, D), rstate(H, D);
    cpu_backend().lightning_prefill(s, q.data(), k.data(), v.data(), T, state.ref(), blocked.data());

    std::vector<float> recurrent(T * H * D);
    std::vector<LightningState> states = {rstate.ref()};
    for (int64_t t = 0; t < T; ++t)
      cpu_backend().lightning_decode(s, q.data() + t * H * D, k.data() + t * H * D,
                                     v.data() + t * H * D, states, recurrent.data() + t * H * D);

    EXPECT_LT(scaled_error(blocked, naive, scale, D), 1e-5);
    EXPECT_LT(scaled_error(recurrent, naive, scale, D), 1e-5);
    EXPECT_LT(scaled_error(recurrent, blocked, scale, D), 1e-5);
    EXPECT_LT(max_row_rel_error(rstate.folded(s).data(), state.base.data(), H * D, D), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, LightningAgreement,
                         ::testing::Values(Case{1, 4, 32}, Case{255, 4, 32}, Case{256, 4, 32},
                                           Case{257, 4, 32}, Case{1000, 4, 32},
                                           Case{3001, 2, 32}, Case{8191, 2, 16}),
                         [](const auto& info) {
                           std::string name = "T";
                           name += std::to_string(info.param.tokens);
                           name += "_H";
                           name += std::to_string(info.param.heads);
                           name += "_D";
                           name += std::to_string(info.param.head_dim);
                           return name;
                         });

// The decay is applied with the right exponent: a single key at distance n is
// weighted by exactly exp(-s n), not exp(-s (n+1)) or exp(-s (n-1)).
TEST(Lightning, DecayExponentIsExact) {
  const int64_t T = 600, H = 1, D = 1;
  std::vector<float> slopes = {0.01f};
  LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 256};
  std::vector<float> q(T, 1.0f), k(T, 0.0f), v(T, 1.0f), out(T), rec(T);
  k[0] = 1.0f;  // only token 0 contributes
  interlace::testing::OwnedLightningState state(H, D), rstate(H, D);
  cpu_backend().lightning_prefill(s, q.data(), k.data(), v.data(), T, state.ref(), out.data());
  std::vector<LightningState> states = {rstate.ref()};
  for (int64_t t = 0; t < T; ++t)
    cpu_backend().lightning_decode(s, &q[t], &k[t], &v[t], states, &rec[t]);
  for (int64_t t : {0, 1, 255, 256, 257, 599}) {
    const double want = std::exp(-0.01 * double(t));
    EXPECT_NEAR(out[t], want, 1e-6 * want) << t;
    EXPECT_NEAR(rec[t], want, 1e-6 * want) << t;
  }
}

}  // namespace
}  // namespace interlace::kernels
