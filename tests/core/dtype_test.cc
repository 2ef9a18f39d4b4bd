#include "interlace/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace interlace::core {
namespace {

// Slow, obviously-correct rounding: among all representable values of a
// format (enumerated from its bit patterns), pick the nearest; ties go to the
// even mantissa.
template <typename Decode>
float nearest_representable(float x, int bits, Decode decode) {
  float best = NAN;
  uint32_t best_code = 0;
  for (uint32_t code = 0; code < (1u << bits); ++code) {
    float v = decode(code);
    if (std::isnan(v) || std::isinf(v)) continue;
    if (std::isnan(best)) { best = v; best_code = code; continue; }
    double d = std::fabs(double(v) - x), db = std::fabs(double(best) - x);
    if (d < db || (d == db && (code & 1u) == 0 && (best_code & 1u) == 1)) { best = v; best_code = code; }
  }
  return best;
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly half way between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  // 1 + 3*2^-8 is half way between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (int i = 0; i < 2000; ++i) {
    float x = u(rng);
    // bf16 values near x: truncations of x's bits and the next one up.
    uint32_t b = float_bits(x) & 0xffff0000u;
    float lo = bits_float(b), hi = bits_float(b + 0x10000u);
    float r = round_to(DType::kBF16, x);
    double dl = std::fabs(double(x) - lo), dh = std::fabs(double(x) - hi);
    float expect = dl < dh ? lo : dh < dl ? hi : (((b >> 16) & 1u) ? hi : lo);
    ASSERT_EQ(r, expect) << x;
  }
}

TEST(DType, F16MatchesExhaustiveNearest) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-70000.0f, 70000.0f);
  std::uniform_real_distribution<float> small(-1e-4f, 1e-4f);
  for (int i = 0; i < 300; ++i) {
    float x = (i % 2) ? u(rng) : small(rng);
    float got = round_to(DType::kF16, x);
    if (std::fabs(x) >= 65520.0f) {
      EXPECT_TRUE(std::isinf(got)) << x;
      continue;
    }
    float want = nearest_representable(x, 16, [](uint32_t c) { return f16_to_float(uint16_t(c)); });
    ASSERT_EQ(got, want) << x;
  }
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
}

TEST(DType, F8E4M3MatchesExhaustiveNearestAndSaturates) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-460.0f, 460.0f);
  std::uniform_real_distribution<float> small(-0.05f, 0.05f);
  for (int i = 0; i < 3000; ++i) {
    float x = (i % 2) ? u(rng) : small(rng);
    float got = round_to(DType::kF8E4M3, x);
    if (std::fabs(x) >= 448.0f) {
      EXPECT_EQ(std::fabs(got), 448.0f) << x;
      continue;
    }
    float want = nearest_representable(x, 8, [](uint32_t c) { return f8e4m3_to_float(uint8_t(c)); });
    ASSERT_EQ(got, want) << x;
  }
  EXPECT_EQ(f8e4m3_to_float(0x7e), 448.0f);
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7f)));
  EXPECT_EQ(round_to(DType::kF8E4M3, 1e6f), 448.0f);
}

TEST(DType, ParseNamesAndRejectsUnknown) {
  EXPECT_EQ(*parse_dtype("bfloat16"), DType::kBF16);
  EXPECT_EQ(*parse_dtype("F32"), DType::kF32);
  auto bad = parse_dtype("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int4"), std::string::npos);
}

TEST(DType, ConvertArraysRoundTrip) {
  std::vector<float> src = {1.5f, -2.25f, 3.0e-3f, 100.0f};
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    std::vector<uint8_t> buf(src.size() * dtype_size(d));
    convert_from_f32(d, src.data(), buf.data(), src.size());
    std::vector<float> back(src.size());
    convert_to_f32(d, buf.data(), back.data(), src.size());
    for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(back[i], round_to(d, src[i])) << dtype_name(d);
  }
}

}  // namespace
}  // namespace interlace::core
