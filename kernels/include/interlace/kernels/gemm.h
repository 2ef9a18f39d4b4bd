// Row-major single-precision GEMM: C = alpha * op(A) op(B) + beta * C.
// Backed by oneDNN's dnnl_sgemm (runs single-threaded when called inside an
// OpenMP parallel region, multi-threaded otherwise).
#pragma once

#include <cstdint>

namespace interlace::kernels {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

}  // namespace interlace::kernels
