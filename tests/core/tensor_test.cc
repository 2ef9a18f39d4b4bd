#include "interlace/core/tensor.h"

#include <gtest/gtest.h>

namespace interlace::core {
namespace {

TEST(Tensor, ZerosAreContiguousAndZero) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  for (float v : t.span_f32()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
}

TEST(Tensor, ViewSharesMemoryAndKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4});
  Tensor t = Tensor::view(owner->data(), {2, 2}, DType::kF32, owner);
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_TRUE(t.is_view());
  EXPECT_EQ(t.f32()[3], 4.0f);
  Tensor rows = t.slice_rows(1, 2);
  EXPECT_EQ(rows.f32()[0], 3.0f);
  t = Tensor();
  rows = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(Tensor, DtypeConversionRoundsAndReshapes) {
  Tensor t = Tensor::from_vector({1.0f, 1.0f + 1.0f / 128 + 1.0f / 512, -3.0f, 0.1f}, {4});
  Tensor b = t.to_dtype(DType::kBF16);
  EXPECT_EQ(b.dtype(), DType::kBF16);
  EXPECT_EQ(b.nbytes(), 8u);
  Tensor back = b.to_f32();
  EXPECT_EQ(back.f32()[1], round_to(DType::kBF16, t.f32()[1]));
  EXPECT_NE(back.f32()[1], t.f32()[1]);
  Tensor r = back.reshape({2, 2});
  EXPECT_EQ(r.dim(0), 2);
  EXPECT_EQ(r.f32()[2], -3.0f);
}

}  // namespace
}  // namespace interlace::core
