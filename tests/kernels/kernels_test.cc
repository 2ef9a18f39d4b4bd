// Every fast CPU kernel against its reference on fresh random inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "interlace/kernels/backend.h"
#include "support/random.h"

namespace interlace::kernels {
namespace {

using interlace::testing::fresh_seed;
using interlace::testing::max_rel_error;
using interlace::testing::max_row_rel_error;
using interlace::testing::normal_vector;

// Every fast backend against the reference: the cpu kernels and the strict
// (batch-invariant) ones.
class KernelsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    seed_ = fresh_seed();
    rng_.seed(seed_);
  }
  std::vector<float> randn(size_t n, float sd = 1.0f) { return normal_vector(rng_, n, sd); }
  Backend& ref_ = reference_backend();
  Backend& cpu_ = GetParam() == "strict" ? strict_backend() : cpu_backend();
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

#define TRACE_SEED() SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_))

TEST_P(KernelsTest, Linear) {
  TRACE_SEED();
  for (auto [m, n, k] : {std::tuple{1, 37, 65}, {17, 64, 128}, {130, 257, 33}}) {
    auto x = randn(m * k), w = randn(n * k);
    std::vector<float> a(m * n), b(m * n);
    ref_.linear(x.data(), w.data(), a.data(), m, n, k);
    cpu_.linear(x.data(), w.data(), b.data(), m, n, k);
    EXPECT_LT(max_rel_error(b.data(), a.data(), a.size()), 1e-5) << m << "x" << n << "x" << k;
  }
}

TEST_P(KernelsTest, RmsNorm) {
  TRACE_SEED();
  const int rows = 9, dim = 333;
  auto x = randn(rows * dim, 3.0f), w = randn(dim);
  std::vector<float> a(rows * dim), b(rows * dim);
  ref_.rms_norm(x.data(), w.data(), a.data(), rows, dim, 1e-6f);
  cpu_.rms_norm(x.data(), w.data(), b.data(), rows, dim, 1e-6f);
  EXPECT_LT(max_row_rel_error(b.data(), a.data(), rows, dim), 1e-5);
  // And the reference against the definition, for one value computed by hand.
  double ss = 0;
  for (int i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
  EXPECT_NEAR(a[5], x[5] / std::sqrt(ss / dim + 1e-6) * w[5], 1e-5);
}

TEST_P(KernelsTest, RopeFullAndPartial) {
  TRACE_SEED();
  const int tokens = 11, heads = 3, head_dim = 16;
  std::vector<int64_t> pos(tokens);
  std::uniform_int_distribution<int64_t> pd(0, 2000);
  for (auto& p : pos) p = pd(rng_);
  for (int rotary : {16, 8}) {
    auto x = randn(tokens * heads * head_dim);
    auto a = x, b = x;
    ref_.rope(a.data(), pos.data(), tokens, heads, head_dim, rotary, 10000.0f);
    cpu_.rope(b.data(), pos.data(), tokens, heads, head_dim, rotary, 10000.0f);
    // fp32 angles (as transformers computes them) at positions up to 2000 are good to ~2e-4.
    EXPECT_LT(max_rel_error(b.data(), a.data(), a.size()), 5e-4);
    // Dimensions past rotary_dim are untouched.
    if (rotary < head_dim) {
      EXPECT_EQ(b[head_dim - 1], x[head_dim - 1]);
    }
    // Position 0 is the identity; pos shifted by one is not.
    std::vector<int64_t> zero(tokens, 0);
    auto c = x;
    cpu_.rope(c.data(), zero.data(), tokens, heads, head_dim, rotary, 10000.0f);
    EXPECT_EQ(c, x);
  }
}

TEST_P(KernelsTest, Elementwise) {
  TRACE_SEED();
  const int n = 1001;
  auto g = randn(n, 4.0f), u = randn(n);
  std::vector<float> a(n), b(n);
  ref_.silu_mul(g.data(), u.data(), a.data(), n);
  cpu_.silu_mul(g.data(), u.data(), b.data(), n);
  EXPECT_LT(max_rel_error(b.data(), a.data(), n), 1e-6);
  a = g, b = g;
  ref_.silu_inplace(a.data(), n);
  cpu_.silu_inplace(b.data(), n);
  EXPECT_LT(max_rel_error(b.data(), a.data(), n), 1e-6);
  a = u, b = u;
  ref_.sigmoid_gate(g.data(), a.data(), n);
  cpu_.sigmoid_gate(g.data(), b.data(), n);
  EXPECT_LT(max_rel_error(b.data(), a.data(), n), 1e-6);
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  core::convert_from_f32(core::DType::kBF16, v.data(), out.data(), v.size());
  return out;
}

TEST_P(KernelsTest, AttentionPrefillGqaWindowAndContinuation) {
  TRACE_SEED();
  for (int64_t window : {0, 5, 70}) {
    for (core::DType kv_dtype : {core::DType::kF32, core::DType::kBF16}) {
      AttentionShape s{.q_heads = 6, .kv_heads = 2, .head_dim = 16, .scale = 0.25f,
                       .window = window, .kv_dtype = kv_dtype};
      const int64_t past = 37, tokens = 150, total = past + tokens;
      auto q = randn(tokens * 6 * 16), k = randn(total * 2 * 16), v = randn(total * 2 * 16);
      auto kb = to_bf16(k), vb = to_bf16(v);
      KvView kv = kv_dtype == core::DType::kF32 ? KvView{k.data(), v.data(), total}
                                                : KvView{kb.data(), vb.data(), total};
      std::vector<float> a(q.size()), b(q.size());
      ref_.attention_prefill(s, q.data(), kv, past, tokens, a.data());
      cpu_.attention_prefill(s, q.data(), kv, past, tokens, b.data());
      EXPECT_LT(max_row_rel_error(b.data(), a.data(), tokens * 6, 16), 2e-5)
          << "window " << window << " " << core::dtype_name(kv_dtype);
    }
  }
}

TEST_P(KernelsTest, AttentionDecodeRaggedBatch) {
  TRACE_SEED();
  for (core::DType kv_dtype : {core::DType::kF32, core::DType::kBF16}) {
    for (int64_t window : {0, 9}) {
      AttentionShape s{.q_heads = 8, .kv_heads = 2, .head_dim = 32, .scale = 0.17f,
                       .window = window, .kv_dtype = kv_dtype};
      std::vector<int64_t> lens = {1, 17, 300};
      std::vector<std::vector<float>> ks, vs;
      std::vector<std::vector<uint16_t>> kbs, vbs;
      std::vector<KvView> views;
      for (int64_t len : lens) {
        ks.push_back(randn(len * 2 * 32));
        vs.push_back(randn(len * 2 * 32));
        kbs.push_back(to_bf16(ks.back()));
        vbs.push_back(to_bf16(vs.back()));
      }
      for (size_t i = 0; i < lens.size(); ++i)
        views.push_back(kv_dtype == core::DType::kF32 ? KvView{ks[i].data(), vs[i].data(), lens[i]}
                                                      : KvView{kbs[i].data(), vbs[i].data(), lens[i]});
      auto q = randn(lens.size() * 8 * 32);
      std::vector<float> a(q.size()), b(q.size());
      ref_.attention_decode(s, q.data(), views, a.data());
      cpu_.attention_decode(s, q.data(), views, b.data());
      EXPECT_LT(max_row_rel_error(b.data(), a.data(), lens.size() * 8, 32), 2e-5);
      // Decoding the last position equals prefill's last row.
      std::vector<float> p(300 * 8 * 32), qq(300 * 8 * 32);
      std::copy(q.begin() + 2 * 8 * 32, q.end(), qq.begin() + 299 * 8 * 32);
      ref_.attention_prefill(s, qq.data(), views[2], 0, 300, p.data());
      EXPECT_LT(max_rel_error(b.data() + 2 * 8 * 32, p.data() + 299 * 8 * 32, 8 * 32), 2e-5);
    }
  }
}

TEST_P(KernelsTest, LightningPrefillFromStateAndDecode) {
  TRACE_SEED();
  using interlace::testing::OwnedLightningState;
  const int64_t H = 4, D = 16, T = 300;
  std::vector<float> slopes = {0.9f, 0.3f, 0.01f, 1e-5f};
  LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 64};
  auto q = randn(T * H * D), k = randn(T * H * D), v = randn(T * H * D);
  // Start from an unfolded state (base + delta after 5 decode steps).
  OwnedLightningState s0(H, D);
  s0.base = randn(H * D * D, 0.5f);
  s0.delta = randn(H * D * D, 0.1f);
  s0.steps = 5;
  OwnedLightningState sa = s0, sb = s0;
  std::vector<float> a(T * H * D), b(T * H * D);
  ref_.lightning_prefill(s, q.data(), k.data(), v.data(), T, sa.ref(), a.data());
  cpu_.lightning_prefill(s, q.data(), k.data(), v.data(), T, sb.ref(), b.data());
  EXPECT_LT(max_row_rel_error(b.data(), a.data(), T * H, D), 1e-5);
  EXPECT_LT(max_row_rel_error(sb.folded(s).data(), sa.folded(s).data(), H * D, D), 1e-5);
  // Decode for a batch of two sequences with different states, past a fold.
  OwnedLightningState s1(H, D);
  s1.base = randn(H * D * D);
  OwnedLightningState r1a = s1, r1b = s1;
  for (int step = 0; step < 70; ++step) {
    auto q2 = randn(2 * H * D), k2 = randn(2 * H * D), v2 = randn(2 * H * D);
    std::vector<float> oa(2 * H * D), ob(2 * H * D);
    std::vector<LightningState> pa = {sa.ref(), r1a.ref()}, pb = {sb.ref(), r1b.ref()};
    ref_.lightning_decode(s, q2.data(), k2.data(), v2.data(), pa, oa.data());
    cpu_.lightning_decode(s, q2.data(), k2.data(), v2.data(), pb, ob.data());
    ASSERT_LT(max_row_rel_error(ob.data(), oa.data(), 2 * H, D), 1e-5) << "step " << step;
  }
  EXPECT_EQ(r1b.steps, 70 - 64);  // folded once at block_size steps
  EXPECT_LT(max_row_rel_error(r1b.folded(s).data(), r1a.folded(s).data(), H * D, D), 1e-5);
}

TEST_P(KernelsTest, MoeRoute) {
  TRACE_SEED();
  const int64_t tokens = 50, experts = 8, top_k = 2;
  auto logits = randn(tokens * experts, 2.0f);
  std::vector<int32_t> ia(tokens * top_k), ib(tokens * top_k);
  std::vector<float> wa(tokens * top_k), wb(tokens * top_k);
  ref_.moe_route(logits.data(), tokens, experts, top_k, ia.data(), wa.data());
  cpu_.moe_route(logits.data(), tokens, experts, top_k, ib.data(), wb.data());
  EXPECT_EQ(ia, ib);
  EXPECT_LT(max_rel_error(wb.data(), wa.data(), wa.size()), 1e-6);
  for (int64_t t = 0; t < tokens; ++t) {
    EXPECT_NEAR(wa[t * 2] + wa[t * 2 + 1], 1.0f, 1e-6);
    // The chosen expert has the largest logit.
    const float* l = logits.data() + t * experts;
    EXPECT_EQ(ia[t * 2], std::max_element(l, l + experts) - l);
  }
}

TEST_P(KernelsTest, LogSoftmaxGather) {
  TRACE_SEED();
  const int64_t rows = 13, vocab = 1000;
  auto logits = randn(rows * vocab, 5.0f);
  std::vector<int32_t> targets(rows);
  std::uniform_int_distribution<int32_t> td(0, vocab - 1);
  for (auto& t : targets) t = td(rng_);
  std::vector<float> a(rows), b(rows);
  ref_.log_softmax_gather(logits.data(), targets.data(), rows, vocab, a.data());
  cpu_.log_softmax_gather(logits.data(), targets.data(), rows, vocab, b.data());
  for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(b[r], a[r], 1e-5 * std::max(1.0f, std::fabs(a[r])));
}

}  // namespace
INSTANTIATE_TEST_SUITE_P(Backends, KernelsTest, ::testing::Values("cpu", "strict"),
                         [](const auto& info) { return info.param; });

}  // namespace interlace::kernels
