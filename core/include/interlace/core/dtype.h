// Storage dtypes and exact conversions between them and fp32.
//
// bf16 and fp16 conversions round to nearest, ties to even; fp8 is the OCP
// e4m3 ("e4m3fn") format: no infinities, max finite 448, NaN = S.1111.111,
// out-of-range values saturate to +-448 (as torch's float8_e4m3fn casts do
// not; we saturate because a stored value must stay finite).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace interlace::core {

enum class DType : uint8_t { kF32, kBF16, kF16, kF8E4M3 };

// Bytes per element.
size_t dtype_size(DType dtype);
// Canonical short name: "f32", "bf16", "f16", "f8e4m3".
const char* dtype_name(DType dtype);
// Accepts the canonical names and common aliases ("fp32", "float32", "bfloat16", ...).
absl::StatusOr<DType> parse_dtype(std::string_view name);

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

uint16_t float_to_f16(float f);
float f16_to_float(uint16_t h);
uint8_t float_to_f8e4m3(float f);
float f8e4m3_to_float(uint8_t b);

// Rounds an fp32 value to the nearest value representable in `dtype`.
inline float round_to(DType dtype, float f) {
  switch (dtype) {
    case DType::kF32: return f;
    case DType::kBF16: return bf16_to_float(float_to_bf16(f));
    case DType::kF16: return f16_to_float(float_to_f16(f));
    case DType::kF8E4M3: return f8e4m3_to_float(float_to_f8e4m3(f));
  }
  return f;
}
// Rounds n values in place (a no-op for f32).
void round_array(DType dtype, float* data, size_t n);

// Converts n elements of `src` (in `src_dtype`) to fp32.
void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t n);
// Converts n fp32 values to `dst_dtype`.
void convert_from_f32(DType dst_dtype, const float* src, void* dst, size_t n);

}  // namespace interlace::core
