// CUDA kernels against the reference backend on fresh random inputs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "interlace/kernels/backend.h"
#include "interlace/kernels/cuda/cuda_kernels.h"
#include "support/random.h"

namespace interlace::kernels {
namespace {

using interlace::testing::max_row_rel_error;

template <typename T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
    seed_ = interlace::testing::fresh_seed();
    rng_.seed(seed_);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(CudaKernels, RmsNormSiluMulLogSoftmax) {
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_));
  const int64_t rows = 7, dim = 1000;
  auto x = interlace::testing::normal_vector(rng_, rows * dim), w = interlace::testing::normal_vector(rng_, dim);
  std::vector<float> ref(rows * dim);
  reference_backend().rms_norm(x.data(), w.data(), ref.data(), rows, dim, 1e-6f);
  float *dx = to_device(x), *dw = to_device(w), *dy = to_device(std::vector<float>(rows * dim));
  ASSERT_EQ(cuda::rms_norm(dx, dw, dy, rows, dim, 1e-6f), "");
  EXPECT_LT(max_row_rel_error(to_host(dy, rows * dim).data(), ref.data(), rows, dim), 1e-5);

  ASSERT_EQ(cuda::silu_mul(dx, dx, dy, rows * dim), "");
  reference_backend().silu_mul(x.data(), x.data(), ref.data(), rows * dim);
  EXPECT_LT(max_row_rel_error(to_host(dy, rows * dim).data(), ref.data(), rows, dim), 1e-5);

  std::vector<int32_t> targets = {0, 5, 999, 17, 3, 500, 2};
  int32_t* dt = to_device(targets);
  float* dout = to_device(std::vector<float>(rows));
  ASSERT_EQ(cuda::log_softmax_gather(dx, dt, rows, dim, dout), "");
  std::vector<float> lref(rows);
  reference_backend().log_softmax_gather(x.data(), targets.data(), rows, dim, lref.data());
  auto got = to_host(dout, rows);
  for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(got[r], lref[r], 1e-4);
  for (void* p : {(void*)dx, (void*)dw, (void*)dy, (void*)dt, (void*)dout}) cudaFree(p);
}

TEST_F(CudaKernels, LightningDecodeMatchesReference) {
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_));
  const int64_t B = 3, H = 4, D = 64;
  std::vector<float> slopes = {0.5f, 0.1f, 0.01f, 1e-5f};
  LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 256};
  auto states = interlace::testing::normal_vector(rng_, B * H * D * D);
  std::vector<std::vector<float>> bases, deltas(B, std::vector<float>(H * D * D, 0.0f));
  std::vector<int64_t> steps(B, 0);
  std::vector<LightningState> refs;
  for (int64_t b = 0; b < B; ++b) bases.emplace_back(states.begin() + b * H * D * D, states.begin() + (b + 1) * H * D * D);
  for (int64_t b = 0; b < B; ++b) refs.push_back({bases[b].data(), deltas[b].data(), &steps[b]});
  float *dstate = to_device(states), *dslopes = to_device(slopes);
  for (int step = 0; step < 5; ++step) {
    auto q = interlace::testing::normal_vector(rng_, B * H * D), k = interlace::testing::normal_vector(rng_, B * H * D),
         v = interlace::testing::normal_vector(rng_, B * H * D);
    std::vector<float> ref(B * H * D);
    reference_backend().lightning_decode(s, q.data(), k.data(), v.data(), refs, ref.data());
    float *dq = to_device(q), *dk = to_device(k), *dv = to_device(v), *dout = to_device(std::vector<float>(B * H * D));
    ASSERT_EQ(cuda::lightning_decode(B, H, D, dslopes, dq, dk, dv, dstate, dout), "");
    EXPECT_LT(max_row_rel_error(to_host(dout, B * H * D).data(), ref.data(), B * H, D), 1e-5);
    for (void* p : {(void*)dq, (void*)dk, (void*)dv, (void*)dout}) cudaFree(p);
  }
  cudaFree(dstate);
  cudaFree(dslopes);
}

}  // namespace
}  // namespace interlace::kernels
