#include "interlace/core/dtype.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace interlace::core {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF8E4M3: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kF8E4M3: return "f8e4m3";
  }
  return "?";
}

absl::StatusOr<DType> parse_dtype(std::string_view name) {
  std::string n = absl::AsciiStrToLower(std::string(name));
  if (n == "f32" || n == "fp32" || n == "float32" || n == "float") return DType::kF32;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "f16" || n == "fp16" || n == "float16" || n == "half") return DType::kF16;
  if (n == "f8e4m3" || n == "fp8" || n == "f8_e4m3" || n == "float8_e4m3fn") return DType::kF8E4M3;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", std::string(name), "' (expected one of f32, bf16, f16, f8e4m3)"));
}

uint16_t float_to_f16(float f) {
  uint32_t x = float_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = m * 2^-24. Round abs/2^-24 to nearest even.
    float a = bits_float(abs);
    float scaled = a * 16777216.0f;  // exact: power of two
    float r = std::nearbyint(scaled);  // default rounding mode: nearest even
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  // Normal: rebias exponent and round mantissa from 23 to 10 bits, nearest even.
  uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);
  uint32_t h = (mant_round >> 13) - ((127u - 15u) << 10);
  return static_cast<uint16_t>(sign | h);
}

float f16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 127u - 15u) << 23) | (mant << 13));
}

uint8_t float_to_f8e4m3(float f) {
  uint32_t x = float_bits(f);
  uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);
  float a = bits_float(abs);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7eu);  // saturate to max finite
  if (a < 0.015625f) {  // below 2^-6: subnormal, step 2^-9
    float r = std::nearbyint(a * 512.0f);
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(r));  // r may be 8 = smallest normal
  }
  // Normal: 3 mantissa bits, round nearest even from 23.
  uint32_t rounded = abs + 0x7ffffu + ((abs >> 20) & 1u);
  uint32_t e = (rounded >> 23) - 127u + 7u;
  uint32_t m = (rounded >> 20) & 0x7u;
  uint32_t v = (e << 3) | m;
  if (v > 0x7eu) v = 0x7eu;  // rounding past 448 saturates
  return static_cast<uint8_t>(sign | v);
}

float f8e4m3_to_float(uint8_t b) {
  uint32_t sign = b & 0x80u;
  uint32_t e = (b >> 3) & 0xfu;
  uint32_t m = b & 0x7u;
  float v;
  if (e == 0xf && m == 0x7) return std::nanf("");
  if (e == 0) {
    v = static_cast<float>(m) / 512.0f;
  } else {
    v = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, static_cast<int>(e) - 7);
  }
  return sign ? -v : v;
}

void round_array(DType dtype, float* data, size_t n) {
  if (dtype == DType::kF32) return;
  if (dtype == DType::kBF16) {
    for (size_t i = 0; i < n; ++i) data[i] = bf16_to_float(float_to_bf16(data[i]));
    return;
  }
  for (size_t i = 0; i < n; ++i) data[i] = round_to(dtype, data[i]);
}

void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t n) {
  switch (src_dtype) {
    case DType::kF32: std::memcpy(dst, src, n * 4); return;
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_float(s[i]);
      return;
    }
  }
}

void convert_from_f32(DType dst_dtype, const float* src, void* dst, size_t n) {
  switch (dst_dtype) {
    case DType::kF32: std::memcpy(dst, src, n * 4); return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_f16(src[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* d = static_cast<uint8_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_f8e4m3(src[i]);
      return;
    }
  }
}

}  // namespace interlace::core
