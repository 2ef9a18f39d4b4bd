// The CUDA backend (kernels/cuda/cuda_backend.h) against the reference
// backend on fresh random inputs, on a device. Outputs are poisoned (every
// byte 0xFF: NaN floats, -1 indices) before each op, so an element the kernel
// never writes fails, and no comparison lets a NaN pass. fp32 ops are held to
// 1e-5 relative; lightning attention to 1e-5 of the sum's scale (as the CPU's
// lightning_test) at 1, 255, 256, 257 and 8191 tokens, prefill and decode;
// paged decode against the layout's host reference (kernels/paged_kv.h).
// Skipped without a CUDA device (label gpu; scripts/device-check.sh runs it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "interlace/core/dtype.h"
#include "interlace/kernels/backend.h"
#include "interlace/kernels/cuda/cuda_backend.h"
#include "interlace/kernels/paged_kv.h"
#include "support/lightning_reference.h"
#include "support/random.h"

namespace interlace::kernels {
namespace {

using cuda::DeviceBuffer;

// max over rows of max|got - want| / max|want| in the row; infinity when got has a non-finite value.
double row_error(const std::vector<float>& got, const std::vector<float>& want, int64_t cols) {
  double worst = 0;
  for (size_t r = 0; r * cols < want.size(); ++r) {
    double num = 0, den = 1e-30;
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = r * cols + c;
      if (!std::isfinite(got[i])) return INFINITY;
      num = std::max(num, std::fabs(double(got[i]) - want[i]));
      den = std::max(den, std::fabs(double(want[i])));
    }
    worst = std::max(worst, num / den);
  }
  return worst;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    backend_ = cuda::CudaBackend::create(0, &error);
    // On the GPU machine (scripts/device-check.sh sets INTERLACE_REQUIRE_GPU)
    // a backend that cannot start is a failure, not a skip.
    if (!backend_ && std::getenv("INTERLACE_REQUIRE_GPU")) FAIL() << "no CUDA backend: " << error;
    if (!backend_) GTEST_SKIP() << "no CUDA backend: " << error;
    seed_ = interlace::testing::fresh_seed();
    rng_.seed(seed_);
  }
  void TearDown() override {
    if (backend_) {
      EXPECT_EQ(backend_->synchronize(), "");
    }
  }

  std::vector<float> randn(size_t n, float stddev = 1.0f) { return interlace::testing::normal_vector(rng_, n, stddev); }
  template <typename T>
  DeviceBuffer up(const std::vector<T>& v) {
    DeviceBuffer b(v.size() * sizeof(T));
    EXPECT_EQ(b.error(), "");
    EXPECT_EQ(b.upload(v.data(), v.size() * sizeof(T)), "");
    return b;
  }
  DeviceBuffer poisoned(size_t bytes) {
    DeviceBuffer b(bytes);
    EXPECT_EQ(b.error(), "");
    EXPECT_EQ(b.fill(0xFF), "");
    return b;
  }
  template <typename T>
  std::vector<T> down(const DeviceBuffer& b, size_t n) {
    EXPECT_EQ(backend_->synchronize(), "");
    std::vector<T> v(n);
    EXPECT_EQ(b.download(v.data(), n * sizeof(T)), "");
    return v;
  }

  std::unique_ptr<cuda::CudaBackend> backend_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

#define TRACE_SEED() SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_))

TEST_F(CudaBackendTest, LinearMatchesReferenceAtOddShapes) {
  TRACE_SEED();
  struct Shape {
    int64_t m, n, k;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{7, 33, 65}, Shape{64, 256, 512}, Shape{3, 1000, 128}, Shape{300, 17, 4096}}) {
    SCOPED_TRACE(std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k));
    auto x = randn(s.m * s.k), w = randn(s.n * s.k, 0.05f);
    std::vector<float> want(s.m * s.n);
    reference_backend().linear(x.data(), w.data(), want.data(), s.m, s.n, s.k);
    DeviceBuffer dx = up(x), dw = up(w), dy = poisoned(want.size() * sizeof(float));
    backend_->linear(dx.as<float>(), dw.as<float>(), dy.as<float>(), s.m, s.n, s.k);
    EXPECT_LT(row_error(down<float>(dy, want.size()), want, s.n), 1e-5);
  }
}

TEST_F(CudaBackendTest, NormRopeActivationsRoutingAndLogSoftmax) {
  TRACE_SEED();
  Backend& ref = reference_backend();
  const int64_t rows = 7, dim = 1000;
  auto x = randn(rows * dim), w = randn(dim), g = randn(rows * dim);
  DeviceBuffer dx = up(x), dw = up(w), dg = up(g);
  std::vector<float> want(rows * dim);

  DeviceBuffer dy = poisoned(want.size() * sizeof(float));
  backend_->rms_norm(dx.as<float>(), dw.as<float>(), dy.as<float>(), rows, dim, 1e-6f);
  ref.rms_norm(x.data(), w.data(), want.data(), rows, dim, 1e-6f);
  EXPECT_LT(row_error(down<float>(dy, want.size()), want, dim), 1e-5) << "rms_norm";

  dy = poisoned(want.size() * sizeof(float));
  backend_->silu_mul(dg.as<float>(), dx.as<float>(), dy.as<float>(), rows * dim);
  ref.silu_mul(g.data(), x.data(), want.data(), rows * dim);
  EXPECT_LT(row_error(down<float>(dy, want.size()), want, dim), 1e-5) << "silu_mul";

  DeviceBuffer dz = up(x);
  backend_->silu_inplace(dz.as<float>(), rows * dim);
  want = x;
  ref.silu_inplace(want.data(), rows * dim);
  EXPECT_LT(row_error(down<float>(dz, want.size()), want, dim), 1e-5) << "silu_inplace";

  dz = up(x);
  backend_->sigmoid_gate(dg.as<float>(), dz.as<float>(), rows * dim);
  want = x;
  ref.sigmoid_gate(g.data(), want.data(), rows * dim);
  EXPECT_LT(row_error(down<float>(dz, want.size()), want, dim), 1e-5) << "sigmoid_gate";

  // RoPE at positions up to 8K, the whole head rotating and only half of it.
  const int64_t tokens = 5, heads = 4, head_dim = 64;
  std::vector<int64_t> positions = {0, 1, 257, 4095, 8191};
  auto r = randn(tokens * heads * head_dim);
  DeviceBuffer dpos = up(positions);
  for (int64_t rotary : {head_dim, head_dim / 2}) {
    DeviceBuffer dr = up(r);
    backend_->rope(dr.as<float>(), dpos.as<int64_t>(), tokens, heads, head_dim, rotary, 1e6f);
    want = r;
    ref.rope(want.data(), positions.data(), tokens, heads, head_dim, rotary, 1e6f);
    EXPECT_LT(row_error(down<float>(dr, want.size()), want, head_dim), 1e-5) << "rope, rotary_dim " << rotary;
  }

  // Mixtral routing: the same experts in the same order, weights to 1e-5.
  const int64_t route_tokens = 33, experts = 8, top_k = 2;
  auto logits = randn(route_tokens * experts, 2.0f);
  std::vector<int32_t> want_index(route_tokens * top_k);
  std::vector<float> want_weight(route_tokens * top_k);
  ref.moe_route(logits.data(), route_tokens, experts, top_k, want_index.data(), want_weight.data());
  DeviceBuffer dl = up(logits), di = poisoned(want_index.size() * 4), dwt = poisoned(want_weight.size() * 4);
  backend_->moe_route(dl.as<float>(), route_tokens, experts, top_k, di.as<int32_t>(), dwt.as<float>());
  EXPECT_EQ(down<int32_t>(di, want_index.size()), want_index) << "moe_route indices";
  EXPECT_LT(row_error(down<float>(dwt, want_weight.size()), want_weight, top_k), 1e-5) << "moe_route weights";

  // log_softmax_gather over a vocabulary-sized row.
  const int64_t vocab = 50000, lrows = 3;
  auto big = randn(lrows * vocab, 3.0f);
  std::vector<int32_t> targets = {0, 49999, 1234};
  std::vector<float> want_lp(lrows);
  ref.log_softmax_gather(big.data(), targets.data(), lrows, vocab, want_lp.data());
  DeviceBuffer db = up(big), dt = up(targets), dlp = poisoned(lrows * 4);
  backend_->log_softmax_gather(db.as<float>(), dt.as<int32_t>(), lrows, vocab, dlp.as<float>());
  const auto lp = down<float>(dlp, lrows);
  for (int64_t i = 0; i < lrows; ++i) EXPECT_NEAR(lp[i], want_lp[i], 1e-5 * (1 + std::fabs(want_lp[i]))) << "row " << i;
}

// Keys and values stored as the dtype says (bf16: the bits a cache would hold).
struct HostKv {
  std::vector<float> k, v;           // f32, or the bf16 values read back
  std::vector<uint16_t> k16, v16;    // bf16 storage
};
HostKv make_kv(std::vector<float> k, std::vector<float> v, core::DType dtype) {
  HostKv kv;
  if (dtype == core::DType::kBF16) {
    for (float x : k) kv.k16.push_back(core::float_to_bf16(x));
    for (float x : v) kv.v16.push_back(core::float_to_bf16(x));
  }
  kv.k = std::move(k);
  kv.v = std::move(v);
  return kv;
}

TEST_F(CudaBackendTest, AttentionPrefillAndDecodeWithGqaWindowsAndBf16Keys) {
  TRACE_SEED();
  struct Heads {
    int64_t q, kv;
  };
  for (core::DType dtype : {core::DType::kF32, core::DType::kBF16})
    // head_dim 192 and 256 use the kernel's second and third output slots per thread.
    for (int64_t D : {64, 128, 192, 256})
      for (Heads heads : {Heads{8, 2}, Heads{4, 4}})  // GQA, and one KV head per query head
        for (int64_t window : {0, 17}) {
        SCOPED_TRACE(std::string(dtype == core::DType::kBF16 ? "bf16" : "f32") + " head_dim " + std::to_string(D) +
                     " heads " + std::to_string(heads.q) + "/" + std::to_string(heads.kv) + " window " +
                     std::to_string(window));
        const int64_t q_heads = heads.q, kv_heads = heads.kv, L = 300, q_start = 100, tokens = L - q_start;
        AttentionShape s{.q_heads = q_heads, .kv_heads = kv_heads, .head_dim = D, .scale = 1.0f / std::sqrt(float(D)),
                         .window = window, .kv_dtype = dtype};
        const bool bf16 = dtype == core::DType::kBF16;
        HostKv kv = make_kv(randn(L * kv_heads * D), randn(L * kv_heads * D), dtype);
        DeviceBuffer dk = bf16 ? up(kv.k16) : up(kv.k), dv = bf16 ? up(kv.v16) : up(kv.v);
        const KvView host_view{bf16 ? (const void*)kv.k16.data() : kv.k.data(), bf16 ? (const void*)kv.v16.data() : kv.v.data(), L};
        const KvView device_view{dk.data(), dv.data(), L};

        auto q = randn(tokens * q_heads * D);
        std::vector<float> want(q.size());
        reference_backend().attention_prefill(s, q.data(), host_view, q_start, tokens, want.data());
        DeviceBuffer dq = up(q), dout = poisoned(want.size() * 4);
        backend_->attention_prefill(s, dq.as<float>(), device_view, q_start, tokens, dout.as<float>());
        EXPECT_LT(row_error(down<float>(dout, want.size()), want, D), 1e-5) << "prefill";

        // Decode: 130 sequences (two launches of the pointer table) of
        // lengths 1..L over prefixes of the same cache.
        const int64_t batch = 130;
        std::vector<KvView> host_views, device_views;
        for (int64_t b = 0; b < batch; ++b) {
          const int64_t len = 1 + (b * 7919) % L;
          host_views.push_back({host_view.k, host_view.v, len});
          device_views.push_back({device_view.k, device_view.v, len});
        }
        auto qd = randn(batch * q_heads * D);
        std::vector<float> want_d(qd.size());
        reference_backend().attention_decode(s, qd.data(), host_views, want_d.data());
        DeviceBuffer dqd = up(qd), doutd = poisoned(want_d.size() * 4);
        backend_->attention_decode(s, dqd.as<float>(), device_views, doutd.as<float>());
        EXPECT_LT(row_error(down<float>(doutd, want_d.size()), want_d, D), 1e-5) << "decode";
      }
}

// Decode through block tables (paged KV): shuffled blocks of a pool, 130
// sequences of lengths 1..300, against the host reference of the layout.
TEST_F(CudaBackendTest, PagedDecodeMatchesTheReferenceThroughShuffledBlockTables) {
  TRACE_SEED();
  const int64_t q_heads = 8, kv_heads = 2, D = 64, block_size = 16, batch = 130;
  for (core::DType dtype : {core::DType::kF32, core::DType::kBF16}) {
    SCOPED_TRACE(dtype == core::DType::kBF16 ? "bf16" : "f32");
    AttentionShape s{.q_heads = q_heads, .kv_heads = kv_heads, .head_dim = D, .scale = 0.125f, .window = 0,
                     .kv_dtype = dtype};
    std::vector<int64_t> lengths;
    int64_t pool_blocks = 0;
    for (int64_t b = 0; b < batch; ++b) {
      lengths.push_back(1 + (b * 7919) % 300);
      pool_blocks += (lengths.back() + block_size - 1) / block_size;
    }
    const size_t values = size_t(pool_blocks * block_size * kv_heads * D);
    std::vector<float> fk = randn(values), fv = randn(values);
    std::vector<uint16_t> k16, v16;
    for (size_t i = 0; i < values; ++i) {
      k16.push_back(core::float_to_bf16(fk[i]));
      v16.push_back(core::float_to_bf16(fv[i]));
    }
    const bool bf16 = dtype == core::DType::kBF16;
    std::vector<int32_t> order(pool_blocks);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng_);
    std::vector<std::vector<int32_t>> tables(batch);
    size_t next = 0;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t p = 0; p < lengths[b]; p += block_size) tables[b].push_back(order[next++]);
    DeviceBuffer dk = bf16 ? up(k16) : up(fk), dv = bf16 ? up(v16) : up(fv);
    std::vector<DeviceBuffer> dtables;
    std::vector<PagedKvView> host_views, device_views;
    for (int64_t b = 0; b < batch; ++b) {
      dtables.push_back(up(tables[b]));
      host_views.push_back({bf16 ? (const void*)k16.data() : fk.data(), bf16 ? (const void*)v16.data() : fv.data(),
                            tables[b].data(), block_size, lengths[b]});
      device_views.push_back({dk.data(), dv.data(), dtables.back().as<int32_t>(), block_size, lengths[b]});
    }
    auto q = randn(batch * q_heads * D);
    std::vector<float> want(q.size());
    paged_attention_decode(s, q.data(), host_views, want.data());
    DeviceBuffer dq = up(q), dout = poisoned(want.size() * 4);
    backend_->attention_decode_paged(s, dq.as<float>(), device_views, dout.as<float>());
    EXPECT_LT(row_error(down<float>(dout, want.size()), want, D), 1e-5);
  }
}

// A lightning state on the device: base, delta, steps in one buffer each.
struct DeviceState {
  DeviceBuffer base, delta, steps;
  LightningState ref() const { return {base.as<float>(), delta.as<float>(), steps.as<int64_t>()}; }
};

class CudaLightning : public CudaBackendTest, public ::testing::WithParamInterface<int64_t> {};

TEST_P(CudaLightning, PrefillAndDecodeMatchTheFloat64Sum) {
  TRACE_SEED();
  // head_dim 16 and 32, and 256 (two columns per thread of 128) where the float64 sum stays cheap.
  const int64_t T = GetParam(), H = 2, D = T > 1000 ? 16 : (T == 257 ? 256 : 32), layers = 8;
  auto gen = [&] {
    auto x = randn(T * H * D);
    for (auto& e : x) e = e / (1.0f + std::exp(-e));  // silu of a projection, as the model feeds them
    return x;
  };
  auto q = gen(), k = gen(), v = gen();
  DeviceBuffer dq = up(q), dk = up(k), dv = up(v);
  for (int64_t layer : {int64_t{0}, layers - 1}) {
    SCOPED_TRACE("tokens " + std::to_string(T) + " layer " + std::to_string(layer));
    std::vector<float> slopes(H);
    for (int64_t h = 0; h < H; ++h) slopes[h] = lightning_slope(h, H, layer, layers);
    DeviceBuffer dslopes = up(slopes);
    LightningShape s{.heads = H, .head_dim = D, .slopes = dslopes.as<float>(), .block_size = 256};
    std::vector<float> naive(T * H * D);
    std::vector<double> scale(T * H);
    for (int64_t h = 0; h < H; ++h) interlace::testing::naive_head(q, k, v, T, H, h, D, slopes[h], naive, scale);

    const std::vector<float> zeros(H * D * D, 0.0f);
    const std::vector<int64_t> zero_steps = {0};
    DeviceState prefill_state{up(zeros), up(zeros), up(zero_steps)};
    DeviceBuffer blocked = poisoned(T * H * D * 4);
    backend_->lightning_prefill(s, dq.as<float>(), dk.as<float>(), dv.as<float>(), T, prefill_state.ref(),
                                blocked.as<float>());
    EXPECT_LT(interlace::testing::scaled_error(down<float>(blocked, T * H * D), naive, scale, D), 1e-5) << "prefill";

    DeviceState decode_state{up(zeros), up(zeros), up(zero_steps)};
    DeviceBuffer recurrent = poisoned(T * H * D * 4);
    const std::vector<LightningState> states = {decode_state.ref()};
    for (int64_t t = 0; t < T; ++t)
      backend_->lightning_decode(s, dq.as<float>() + t * H * D, dk.as<float>() + t * H * D, dv.as<float>() + t * H * D,
                                 states, recurrent.as<float>() + t * H * D);
    EXPECT_LT(interlace::testing::scaled_error(down<float>(recurrent, T * H * D), naive, scale, D), 1e-5) << "decode";
    // Decode folds every block_size steps: T mod 256 steps are left unfolded.
    EXPECT_EQ(down<int64_t>(decode_state.steps, 1)[0], T % 256);
    EXPECT_EQ(down<int64_t>(prefill_state.steps, 1)[0], 0) << "prefill leaves the state folded";
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, CudaLightning, ::testing::Values(1, 255, 256, 257, 8191),
                         [](const auto& info) { return "T" + std::to_string(info.param); });

// Prefill from an unfolded state (after some decode steps) continues it as
// the reference does, and a decode batch of 130 sequences (two launches)
// matches the reference sequence by sequence, across a fold.
TEST_F(CudaBackendTest, LightningContinuesUnfoldedStatesInBatches) {
  TRACE_SEED();
  const int64_t H = 4, D = 16, T = 300, batch = 130;
  std::vector<float> slopes = {0.9f, 0.3f, 0.01f, 1e-5f};
  DeviceBuffer dslopes = up(slopes);
  LightningShape host_shape{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 64};
  LightningShape dev_shape = host_shape;
  dev_shape.slopes = dslopes.as<float>();
  auto q = randn(T * H * D), k = randn(T * H * D), v = randn(T * H * D);
  interlace::testing::OwnedLightningState host(H, D);
  host.base = randn(H * D * D, 0.5f);
  host.delta = randn(H * D * D, 0.1f);
  host.steps = 5;
  DeviceState dev{up(host.base), up(host.delta), up(std::vector<int64_t>{host.steps})};
  std::vector<float> want(T * H * D);
  reference_backend().lightning_prefill(host_shape, q.data(), k.data(), v.data(), T, host.ref(), want.data());
  DeviceBuffer dq = up(q), dk = up(k), dv = up(v), dout = poisoned(want.size() * 4);
  backend_->lightning_prefill(dev_shape, dq.as<float>(), dk.as<float>(), dv.as<float>(), T, dev.ref(), dout.as<float>());
  EXPECT_LT(row_error(down<float>(dout, want.size()), want, D), 1e-5) << "prefill from an unfolded state";
  EXPECT_LT(row_error(down<float>(dev.base, H * D * D), host.base, D), 1e-5) << "state after prefill";

  std::vector<interlace::testing::OwnedLightningState> hosts;
  std::vector<DeviceState> devs;
  for (int64_t b = 0; b < batch; ++b) {
    hosts.emplace_back(H, D);
    hosts.back().base = randn(H * D * D, 0.5f);
    devs.push_back({up(hosts.back().base), up(hosts.back().delta), up(std::vector<int64_t>{0})});
  }
  std::vector<LightningState> host_refs, dev_refs;
  for (int64_t b = 0; b < batch; ++b) {
    host_refs.push_back(hosts[b].ref());
    dev_refs.push_back(devs[b].ref());
  }
  for (int step = 0; step < 70; ++step) {
    auto qb = randn(batch * H * D), kb = randn(batch * H * D), vb = randn(batch * H * D);
    std::vector<float> want_b(qb.size());
    reference_backend().lightning_decode(host_shape, qb.data(), kb.data(), vb.data(), host_refs, want_b.data());
    DeviceBuffer dqb = up(qb), dkb = up(kb), dvb = up(vb), doutb = poisoned(want_b.size() * 4);
    backend_->lightning_decode(dev_shape, dqb.as<float>(), dkb.as<float>(), dvb.as<float>(), dev_refs, doutb.as<float>());
    ASSERT_LT(row_error(down<float>(doutb, want_b.size()), want_b, D), 1e-5) << "decode step " << step;
  }
  EXPECT_EQ(down<int64_t>(devs[129].steps, 1)[0], 70 - 64) << "folded once at block_size steps";
}

}  // namespace
}  // namespace interlace::kernels
