// Row-major single-precision GEMM: C = alpha * op(A) op(B) + beta * C.
// Backed by oneDNN's dnnl_sgemm (runs single-threaded when called inside an
// OpenMP parallel region, multi-threaded otherwise).
#pragma once

#include <cstdint>

namespace interlace::kernels {

// Time and work of the GEMMs called outside OpenMP parallel regions (the ones
// that own the whole machine; calls from inside our own parallel tiles run
// concurrently and are not timed). For benchmarks: reset, run, read.
struct GemmCounters {
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;  // 2*m*n*k per call
};
GemmCounters gemm_counters();
void reset_gemm_counters();

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

}  // namespace interlace::kernels
