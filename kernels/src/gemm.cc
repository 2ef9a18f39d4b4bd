#include "interlace/kernels/gemm.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <string>

#include "dnnl.h"
#include "interlace/core/status.h"

namespace interlace::kernels {

namespace {
std::atomic<int64_t> g_calls{0}, g_nanos{0};
std::atomic<double> g_flops{0};
}  // namespace

GemmCounters gemm_counters() {
  return {g_calls.load(), double(g_nanos.load()) * 1e-9, g_flops.load()};
}

void reset_gemm_counters() {
  g_calls = 0;
  g_nanos = 0;
  g_flops = 0;
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  const bool timed = !omp_in_parallel();
  const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                                      lda, b, ldb, beta, c, ldc);
  if (timed) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
    g_calls.fetch_add(1, std::memory_order_relaxed);
    g_nanos.fetch_add(ns.count(), std::memory_order_relaxed);
    double f = g_flops.load(std::memory_order_relaxed);
    while (!g_flops.compare_exchange_weak(f, f + 2.0 * double(m) * double(n) * double(k))) {
    }
  }
  INTERLACE_CHECK(st == dnnl_success, ("dnnl_sgemm failed with status " + std::to_string(int(st))).c_str());
}

}  // namespace interlace::kernels
