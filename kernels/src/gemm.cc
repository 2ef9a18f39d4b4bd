#include "interlace/kernels/gemm.h"

#include <string>

#include "dnnl.h"
#include "interlace/core/status.h"

namespace interlace::kernels {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                                      lda, b, ldb, beta, c, ldc);
  INTERLACE_CHECK(st == dnnl_success, ("dnnl_sgemm failed with status " + std::to_string(int(st))).c_str());
}

}  // namespace interlace::kernels
