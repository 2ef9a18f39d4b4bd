// Micro-benchmarks of the kernels, fast CPU against reference where the
// reference is fast enough to time. Google Benchmark prints the machine
// context (CPU, caches, load) with the figures; --benchmark_format=json for JSON.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "interlace/kernels/backend.h"
#include "interlace/kernels/gemm.h"

namespace {

using namespace interlace::kernels;

std::vector<float> randn(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void BM_Sgemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto a = randn(n * n, 1), b = randn(n * n, 2);
  std::vector<float> c(n * n);
  for (auto _ : state) sgemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Sgemm)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Linear(benchmark::State& state) {
  Backend& be = state.range(1) ? cpu_backend() : reference_backend();
  const int64_t m = state.range(0), n = 1024, k = 1024;
  auto x = randn(m * k, 3), w = randn(n * k, 4);
  std::vector<float> y(m * n);
  for (auto _ : state) be.linear(x.data(), w.data(), y.data(), m, n, k);
  state.SetLabel(std::string(be.name()));
}
BENCHMARK(BM_Linear)->Args({1, 0})->Args({1, 1})->Args({64, 1})->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_LightningDecode(benchmark::State& state) {
  Backend& be = state.range(0) ? cpu_backend() : reference_backend();
  const int64_t H = 8, D = 128;
  std::vector<float> slopes(H, 0.05f), base(H * D * D), delta(H * D * D);
  int64_t steps = 0;
  LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 256};
  LightningState st{base.data(), delta.data(), &steps};
  auto q = randn(H * D, 5), k = randn(H * D, 6), v = randn(H * D, 7);
  std::vector<float> o(H * D);
  for (auto _ : state) be.lightning_decode(s, q.data(), k.data(), v.data(), {&st, 1}, o.data());
  state.counters["state GB/s"] = benchmark::Counter(3.0 * H * D * D * 4, benchmark::Counter::kIsIterationInvariantRate,
                                                    benchmark::Counter::kIs1000);
  state.SetLabel(std::string(be.name()));
}
BENCHMARK(BM_LightningDecode)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_LightningPrefill(benchmark::State& state) {
  const int64_t T = state.range(0), H = 8, D = 128;
  std::vector<float> slopes(H, 0.05f), base(H * D * D), delta(H * D * D);
  int64_t steps = 0;
  LightningShape s{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 256};
  LightningState st{base.data(), delta.data(), &steps};
  auto q = randn(T * H * D, 5), k = randn(T * H * D, 6), v = randn(T * H * D, 7);
  std::vector<float> o(T * H * D);
  for (auto _ : state) cpu_backend().lightning_prefill(s, q.data(), k.data(), v.data(), T, st, o.data());
  state.counters["tokens/s"] = benchmark::Counter(T, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LightningPrefill)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_AttentionDecode(benchmark::State& state) {
  const int64_t T = state.range(0), Hq = 32, Hk = 8, D = 128;
  auto k = randn(T * Hk * D, 8), v = randn(T * Hk * D, 9), q = randn(Hq * D, 10);
  std::vector<float> o(Hq * D);
  AttentionShape s{.q_heads = Hq, .kv_heads = Hk, .head_dim = D, .scale = 0.088f, .window = 0,
                   .kv_dtype = interlace::core::DType::kF32};
  KvView view{k.data(), v.data(), T};
  for (auto _ : state) cpu_backend().attention_decode(s, q.data(), {&view, 1}, o.data());
  state.counters["KV GB/s"] = benchmark::Counter(2.0 * T * Hk * D * 4, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_AttentionDecode)->Arg(1024)->Arg(8192)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
