// Tensor dtype conversions and views.
#include <slm/tensor.h>

#include "core/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

namespace {

using slm::DType;
using slm::Tensor;

Tensor filled_f32(std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::sin(static_cast<float>(i) * 0.37f) * std::exp2(static_cast<float>(i % 40 - 20));
  return t;
}

TEST(Tensor, ZerosIsAlignedZeroFilledAndSized) {
  const Tensor t = Tensor::zeros(DType::BF16, {3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 30u);
  EXPECT_EQ(t.shape_string(), "[3, 5]");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.at(i), 0.0f);
}

TEST(Tensor, DtypeNamesAndSizes) {
  EXPECT_EQ(slm::dtype_bytes(DType::F32, 3), 12u);
  EXPECT_EQ(slm::dtype_bytes(DType::F16, 3), 6u);
  EXPECT_EQ(slm::dtype_bytes(DType::BF16, 3), 6u);
  EXPECT_EQ(slm::dtype_bytes(DType::Q8, 64), 68u);
  EXPECT_EQ(slm::dtype_bytes(DType::Q4, 64), 36u);
  EXPECT_EQ(slm::parse_dtype("q8"), DType::Q8);
  EXPECT_EQ(slm::parse_dtype("q4"), DType::Q4);
  EXPECT_EQ(slm::parse_dtype("BF16"), DType::BF16);
  EXPECT_EQ(slm::parse_dtype("bfloat16"), DType::BF16);
  EXPECT_EQ(slm::parse_dtype("F16"), DType::F16);
  EXPECT_EQ(slm::parse_dtype("float32"), DType::F32);
  EXPECT_FALSE(slm::parse_dtype("F64").has_value());
  EXPECT_FALSE(slm::parse_dtype("").has_value());
  EXPECT_EQ(slm::dtype_name(DType::BF16), "bf16");
}

TEST(Tensor, ToSameDtypeIsAViewOfTheSameBytes) {
  const Tensor t = filled_f32({4, 7});
  const Tensor same = t.to(DType::F32);
  EXPECT_EQ(same.data(), t.data());
  EXPECT_EQ(same.shape(), t.shape());
}

TEST(Tensor, F32ToBf16RoundsEachElementAndBackIsExact) {
  const Tensor t = filled_f32({5, 13});
  const Tensor b = t.to(DType::BF16);
  ASSERT_EQ(b.dtype(), DType::BF16);
  ASSERT_EQ(b.shape(), t.shape());
  ASSERT_NE(b.data(), t.data());
  for (int64_t i = 0; i < t.numel(); ++i) {
    ASSERT_EQ(b.data_as<uint16_t>()[i], slm::f32_to_bf16(t.at(i))) << i;
  }
  const Tensor back = b.to(DType::F32);
  const Tensor again = back.to(DType::BF16);
  ASSERT_EQ(std::memcmp(again.data(), b.data(), b.nbytes()), 0);
  for (int64_t i = 0; i < t.numel(); ++i) {
    ASSERT_EQ(back.at(i), slm::bf16_to_f32(b.data_as<uint16_t>()[i]));
    ASSERT_NEAR(back.at(i), t.at(i), std::fabs(t.at(i)) * 0x1p-8f) << i;
  }
}

TEST(Tensor, F32ToF16RoundsEachElementAndBackIsExact) {
  const Tensor t = filled_f32({3, 11});
  const Tensor h = t.to(DType::F16);
  ASSERT_EQ(h.dtype(), DType::F16);
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(h.data_as<uint16_t>()[i], slm::f32_to_f16(t.at(i))) << i;
  const Tensor back = h.to(DType::F32);
  const Tensor again = back.to(DType::F16);
  ASSERT_EQ(std::memcmp(again.data(), h.data(), h.nbytes()), 0);
}

TEST(Tensor, F16ToBf16GoesThroughTheExactF32Value) {
  Tensor h = Tensor::zeros(DType::F16, {1 << 16});
  for (int64_t i = 0; i < h.numel(); ++i) h.data_as<uint16_t>()[i] = static_cast<uint16_t>(i);
  const Tensor b = h.to(DType::BF16);
  for (int64_t i = 0; i < h.numel(); ++i) {
    const float f = slm::f16_to_f32(static_cast<uint16_t>(i));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(b.at(i)));
    } else {
      ASSERT_EQ(b.data_as<uint16_t>()[i], slm::f32_to_bf16(f)) << i;
    }
  }
}

TEST(Tensor, ViewKeepsItsOwnerAlive) {
  Tensor view;
  {
    const Tensor owner = filled_f32({8});
    view = Tensor(DType::F32, {2, 2}, owner.data_as<float>() + 4, std::shared_ptr<void>(owner.data(), [owner](void*) {}));
  }
  EXPECT_EQ(view.at(0), std::sin(4 * 0.37f) * std::exp2(-16.0f));
  EXPECT_EQ(view.numel(), 4);
}

}  // namespace
