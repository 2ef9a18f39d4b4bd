// Every backward op against central finite differences of a float64 forward,
// on tiny shapes with fresh random inputs. The loss is sum(dy * y) for a random
// dy, so its gradient is exactly the vector-Jacobian product the op computes.
#include "interlace/kernels/backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "support/random.h"

namespace interlace::kernels {
namespace {

using Vec = std::vector<double>;
using interlace::testing::fresh_seed;

std::vector<float> to_f(const Vec& v) { return {v.begin(), v.end()}; }

// d/dx_i of loss(x) by central differences.
Vec numeric_grad(const std::function<double(const Vec&)>& loss, Vec x) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::fabs(x[i])), keep = x[i];
    x[i] = keep + h;
    const double up = loss(x);
    x[i] = keep - h;
    const double down = loss(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// The fp32 analytic gradient agrees with float64 finite differences to fp32 accuracy.
void expect_close(const std::vector<float>& analytic, const Vec& numeric, const char* what) {
  ASSERT_EQ(analytic.size(), numeric.size());
  double scale = 1e-6, worst = 0;
  for (double v : numeric) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < numeric.size(); ++i) worst = std::max(worst, std::fabs(analytic[i] - numeric[i]));
  EXPECT_LT(worst / scale, 2e-4) << what << ": max |analytic - numeric| " << worst << " at gradient scale " << scale;
}

double dotv(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

class Backward : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = fresh_seed();
    rng_.seed(seed_);
  }
  Vec randn(size_t n, double sd = 1.0) {
    std::normal_distribution<double> d(0.0, sd);
    Vec v(n);
    for (auto& x : v) x = d(rng_);
    return v;
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

#define TRACE_SEED() SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_))

TEST_F(Backward, Linear) {
  TRACE_SEED();
  const int m = 3, n = 5, k = 4;
  Vec x = randn(m * k), w = randn(n * k), dy = randn(m * n);
  auto fwd = [&](const Vec& xx, const Vec& ww) {
    Vec y(m * n, 0.0);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j)
        for (int p = 0; p < k; ++p) y[i * n + j] += xx[i * k + p] * ww[j * k + p];
    return dotv(y, dy);
  };
  std::vector<float> dx(m * k, 0.0f), dw(n * k, 0.0f);
  backward::linear(to_f(x).data(), to_f(w).data(), to_f(dy).data(), m, n, k, dx.data(), dw.data());
  expect_close(dx, numeric_grad([&](const Vec& v) { return fwd(v, w); }, x), "dx");
  expect_close(dw, numeric_grad([&](const Vec& v) { return fwd(x, v); }, w), "dw");
}

TEST_F(Backward, RmsNorm) {
  TRACE_SEED();
  const int rows = 3, dim = 7;
  const double eps = 1e-5;
  Vec x = randn(rows * dim), w = randn(dim), dy = randn(rows * dim);
  auto fwd = [&](const Vec& xx, const Vec& ww) {
    double l = 0;
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += xx[r * dim + i] * xx[r * dim + i];
      const double inv = 1 / std::sqrt(ss / dim + eps);
      for (int i = 0; i < dim; ++i) l += dy[r * dim + i] * xx[r * dim + i] * inv * ww[i];
    }
    return l;
  };
  std::vector<float> dx(rows * dim, 0.0f), dw(dim, 0.0f);
  backward::rms_norm(to_f(x).data(), to_f(w).data(), to_f(dy).data(), rows, dim, eps, dx.data(), dw.data());
  expect_close(dx, numeric_grad([&](const Vec& v) { return fwd(v, w); }, x), "dx");
  expect_close(dw, numeric_grad([&](const Vec& v) { return fwd(x, v); }, w), "dweight");
}

TEST_F(Backward, Rope) {
  TRACE_SEED();
  const int tokens = 4, heads = 2, hd = 8, rotary = 6;
  const float theta = 100.0f;
  std::vector<int64_t> pos = {0, 3, 17, 250};
  Vec x = randn(tokens * heads * hd), dy = randn(x.size());
  auto fwd = [&](const Vec& xx) {
    std::vector<float> xf = to_f(xx);
    // The float forward is not smooth enough for finite differences; rotate in double
    // with the same fp32 angles.
    Vec y = xx;
    for (int t = 0; t < tokens; ++t)
      for (int i = 0; i < rotary / 2; ++i) {
        const float inv = 1.0f / std::pow(theta, float(2 * i) / float(rotary));
        const float angle = float(pos[t]) * inv;
        const double c = std::cos(angle), s = std::sin(angle);
        for (int h = 0; h < heads; ++h) {
          const int b = (t * heads + h) * hd;
          y[b + i] = xx[b + i] * c - xx[b + i + rotary / 2] * s;
          y[b + i + rotary / 2] = xx[b + i + rotary / 2] * c + xx[b + i] * s;
        }
      }
    return dotv(y, dy);
  };
  std::vector<float> g = to_f(dy);
  backward::rope(g.data(), pos.data(), tokens, heads, hd, rotary, theta);
  expect_close(g, numeric_grad(fwd, x), "dx");
}

TEST_F(Backward, ElementwiseGates) {
  TRACE_SEED();
  const int n = 9;
  Vec g = randn(n, 2.0), u = randn(n), dy = randn(n);
  auto silu = [](double a) { return a / (1 + std::exp(-a)); };
  auto sig = [](double a) { return 1 / (1 + std::exp(-a)); };
  std::vector<float> dg(n, 0.0f), du(n, 0.0f);
  backward::silu_mul(to_f(g).data(), to_f(u).data(), to_f(dy).data(), n, dg.data(), du.data());
  auto f1 = [&](const Vec& gg, const Vec& uu) {
    double l = 0;
    for (int i = 0; i < n; ++i) l += dy[i] * silu(gg[i]) * uu[i];
    return l;
  };
  expect_close(dg, numeric_grad([&](const Vec& v) { return f1(v, u); }, g), "silu_mul dgate");
  expect_close(du, numeric_grad([&](const Vec& v) { return f1(g, v); }, u), "silu_mul dup");
  std::vector<float> dx(n, 0.0f);
  backward::silu(to_f(g).data(), to_f(dy).data(), n, dx.data());
  expect_close(dx, numeric_grad([&](const Vec& v) { return f1(v, Vec(n, 1.0)); }, g), "silu");
  std::vector<float> dgate(n, 0.0f), dxx(n, 0.0f);
  backward::sigmoid_gate(to_f(g).data(), to_f(u).data(), to_f(dy).data(), n, dgate.data(), dxx.data());
  auto f2 = [&](const Vec& gg, const Vec& xx) {
    double l = 0;
    for (int i = 0; i < n; ++i) l += dy[i] * sig(gg[i]) * xx[i];
    return l;
  };
  expect_close(dgate, numeric_grad([&](const Vec& v) { return f2(v, u); }, g), "sigmoid_gate dgate");
  expect_close(dxx, numeric_grad([&](const Vec& v) { return f2(g, v); }, u), "sigmoid_gate dx");
}

TEST_F(Backward, CrossEntropyWithMaskScale) {
  TRACE_SEED();
  const int rows = 4, vocab = 6;
  Vec l = randn(rows * vocab, 2.0);
  std::vector<int32_t> targets = {1, 5, 0, 3};
  std::vector<float> scale = {0.5f, 0.0f, 0.5f, 0.5f};  // row 1 masked out
  auto fwd = [&](const Vec& ll) {
    double loss = 0;
    for (int r = 0; r < rows; ++r) {
      double mx = -INFINITY, s = 0;
      for (int i = 0; i < vocab; ++i) mx = std::max(mx, ll[r * vocab + i]);
      for (int i = 0; i < vocab; ++i) s += std::exp(ll[r * vocab + i] - mx);
      loss -= scale[r] * (ll[r * vocab + targets[r]] - mx - std::log(s));
    }
    return loss;
  };
  std::vector<float> dl(rows * vocab, 0.0f);
  backward::cross_entropy(to_f(l).data(), targets.data(), scale.data(), rows, vocab, dl.data());
  expect_close(dl, numeric_grad(fwd, l), "dlogits");
  for (int i = 0; i < vocab; ++i) EXPECT_EQ(dl[vocab + i], 0.0f);
}

TEST_F(Backward, SoftmaxAttentionGqaWindow) {
  TRACE_SEED();
  const int T = 7, Hq = 4, Hk = 2, D = 3;
  for (int64_t window : {0, 3}) {
    AttentionShape s{.q_heads = Hq, .kv_heads = Hk, .head_dim = D, .scale = 0.7f, .window = window,
                     .kv_dtype = core::DType::kF32};
    Vec q = randn(T * Hq * D), k = randn(T * Hk * D), v = randn(T * Hk * D), dy = randn(T * Hq * D);
    auto fwd = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
      double loss = 0;
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < Hq; ++h) {
          const int kh = h / (Hq / Hk);
          const int first = window > 0 ? std::max<int>(0, t - int(window) + 1) : 0;
          Vec sc(T);
          double mx = -INFINITY, sum = 0;
          for (int j = first; j <= t; ++j) {
            double d = 0;
            for (int e = 0; e < D; ++e) d += qq[(t * Hq + h) * D + e] * kk[(j * Hk + kh) * D + e];
            sc[j] = d * s.scale;
            mx = std::max(mx, sc[j]);
          }
          for (int j = first; j <= t; ++j) sum += sc[j] = std::exp(sc[j] - mx);
          for (int j = first; j <= t; ++j)
            for (int e = 0; e < D; ++e) loss += dy[(t * Hq + h) * D + e] * sc[j] / sum * vv[(j * Hk + kh) * D + e];
        }
      return loss;
    };
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    backward::attention(s, to_f(q).data(), to_f(k).data(), to_f(v).data(), to_f(dy).data(), T, dq.data(),
                        dk.data(), dv.data());
    expect_close(dq, numeric_grad([&](const Vec& x) { return fwd(x, k, v); }, q), "dq");
    expect_close(dk, numeric_grad([&](const Vec& x) { return fwd(q, x, v); }, k), "dk");
    expect_close(dv, numeric_grad([&](const Vec& x) { return fwd(q, k, x); }, v), "dv");
  }
}

// The tiled kernel over several query tiles (64 rows each; 150 tokens leave a
// partial last tile) and a window that spans tile boundaries, against the
// analytic gradient computed row by row in float64 (validated by finite
// differences at small sizes above).
TEST_F(Backward, SoftmaxAttentionAcrossQueryTiles) {
  TRACE_SEED();
  const int64_t T = 150, Hq = 4, Hk = 2, D = 8, group = Hq / Hk;
  for (int64_t window : {0, 70}) {
    AttentionShape s{.q_heads = Hq, .kv_heads = Hk, .head_dim = D, .scale = 0.35f, .window = window,
                     .kv_dtype = core::DType::kF32};
    Vec q = randn(T * Hq * D), k = randn(T * Hk * D), v = randn(T * Hk * D), dy = randn(T * Hq * D);
    Vec rq(q.size(), 0), rk(k.size(), 0), rv(v.size(), 0);
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kh = h / group;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t first = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
        Vec p(T, 0), dp(T, 0);
        double mx = -INFINITY, sum = 0, pdp = 0;
        for (int64_t j = first; j <= t; ++j) {
          double d = 0;
          for (int64_t e = 0; e < D; ++e) d += q[(t * Hq + h) * D + e] * k[(j * Hk + kh) * D + e];
          p[j] = d * s.scale;
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = first; j <= t; ++j) sum += p[j] = std::exp(p[j] - mx);
        for (int64_t j = first; j <= t; ++j) {
          p[j] /= sum;
          for (int64_t e = 0; e < D; ++e) dp[j] += dy[(t * Hq + h) * D + e] * v[(j * Hk + kh) * D + e];
          pdp += p[j] * dp[j];
        }
        for (int64_t j = first; j <= t; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * s.scale;
          for (int64_t e = 0; e < D; ++e) {
            rq[(t * Hq + h) * D + e] += ds * k[(j * Hk + kh) * D + e];
            rk[(j * Hk + kh) * D + e] += ds * q[(t * Hq + h) * D + e];
            rv[(j * Hk + kh) * D + e] += p[j] * dy[(t * Hq + h) * D + e];
          }
        }
      }
    }
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    backward::attention(s, to_f(q).data(), to_f(k).data(), to_f(v).data(), to_f(dy).data(), T, dq.data(),
                        dk.data(), dv.data());
    expect_close(dq, rq, "dq");
    expect_close(dk, rk, "dk");
    expect_close(dv, rv, "dv");
    // Bit-identical on every call (with several threads: which thread sums which
    // tiles' dK/dV is fixed), so training runs of one spec are reproducible.
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<float> dq2(q.size(), 0.0f), dk2(k.size(), 0.0f), dv2(v.size(), 0.0f);
      backward::attention(s, to_f(q).data(), to_f(k).data(), to_f(v).data(), to_f(dy).data(), T, dq2.data(),
                          dk2.data(), dv2.data());
      ASSERT_TRUE(dq2 == dq && dk2 == dk && dv2 == dv) << "call " << rep << " differs from the first";
    }
  }
}

// Several blocks (block 4 over 11 tokens, not a multiple), slopes of the first
// and last layer of an 8-layer model: an off-by-one in a decay exponent moves the
// gradient by a factor exp(-s), far beyond the tolerance for the first layer.
TEST_F(Backward, LightningBlocked) {
  TRACE_SEED();
  const int T = 11, H = 2, D = 3;
  for (int layer : {0, 7}) {
    std::vector<float> slopes = {lightning_slope(0, H, layer, 8), lightning_slope(1, H, layer, 8)};
    LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 4};
    Vec q = randn(T * H * D), k = randn(T * H * D), v = randn(T * H * D), dy = randn(T * H * D);
    auto fwd = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
      double loss = 0;
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t)
          for (int j = 0; j <= t; ++j) {
            double d = 0;
            for (int e = 0; e < D; ++e) d += qq[(t * H + h) * D + e] * kk[(j * H + h) * D + e];
            const double w = std::exp(-double(slopes[h]) * (t - j)) * d;
            for (int e = 0; e < D; ++e) loss += dy[(t * H + h) * D + e] * w * vv[(j * H + h) * D + e];
          }
      return loss;
    };
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    backward::lightning(s, to_f(q).data(), to_f(k).data(), to_f(v).data(), to_f(dy).data(), T, dq.data(),
                        dk.data(), dv.data());
    SCOPED_TRACE("layer " + std::to_string(layer));
    expect_close(dq, numeric_grad([&](const Vec& x) { return fwd(x, k, v); }, q), "dq");
    expect_close(dk, numeric_grad([&](const Vec& x) { return fwd(q, x, v); }, k), "dk");
    expect_close(dv, numeric_grad([&](const Vec& x) { return fwd(q, k, x); }, v), "dv");
  }
}

TEST_F(Backward, MoeRouting) {
  TRACE_SEED();
  const int tokens = 3, E = 5, K = 2;
  Vec logits = randn(tokens * E, 2.0), dw = randn(tokens * K);
  std::vector<int32_t> index(tokens * K);
  std::vector<float> weight(tokens * K);
  reference_backend().moe_route(to_f(logits).data(), tokens, E, K, index.data(), weight.data());
  // Loss over the fixed selection (finite differences of 1e-6 do not change it).
  auto fwd = [&](const Vec& l) {
    double loss = 0;
    for (int t = 0; t < tokens; ++t) {
      double mx = -INFINITY, sum = 0, z = 0;
      for (int e = 0; e < E; ++e) mx = std::max(mx, l[t * E + e]);
      Vec p(E);
      for (int e = 0; e < E; ++e) sum += p[e] = std::exp(l[t * E + e] - mx);
      for (int i = 0; i < K; ++i) z += p[index[t * K + i]] / sum;
      for (int i = 0; i < K; ++i) loss += dw[t * K + i] * (p[index[t * K + i]] / sum) / z;
    }
    return loss;
  };
  std::vector<float> dl(tokens * E, 0.0f);
  backward::moe_route(to_f(logits).data(), index.data(), to_f(dw).data(), tokens, E, K, dl.data());
  expect_close(dl, numeric_grad(fwd, logits), "dlogits");
}

}  // namespace
}  // namespace interlace::kernels
