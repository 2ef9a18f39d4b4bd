// Reading one head's row out of a KV cache stored as f32 or bf16.
#pragma once

#include <cstdint>
#include <cstring>

#include "interlace/core/dtype.h"

namespace interlace::kernels {

// Copies row `pos`, head `head` of a [len, heads, dim] cache into `dst` as f32.
inline void load_kv_row(core::DType dtype, const void* base, int64_t pos, int64_t heads,
                        int64_t head, int64_t dim, float* dst) {
  const int64_t offset = (pos * heads + head) * dim;
  if (dtype == core::DType::kBF16) {
    const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = core::bf16_to_float(src[d]);
  } else {
    std::memcpy(dst, static_cast<const float*>(base) + offset, dim * sizeof(float));
  }
}

}  // namespace interlace::kernels
