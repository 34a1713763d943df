// q8/q4 block quantization: each value within half a step of the original,
// the scale chosen from the block's largest magnitude, and the nibble layout.
#include "core/half.h"
#include "core/quant.h"

#include <slm/error.h>
#include <slm/random.h>
#include <slm/tensor.h>

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace {

std::vector<float> block_values(uint64_t seed, int64_t n) {
  slm::Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.normal() * std::exp2(static_cast<double>(rng.next() % 8) - 4));
  return v;
}

TEST(Quant, Q8WithinHalfAStep) {
  const auto v = block_values(1, 32 * 64);
  std::vector<slm::BlockQ8> blocks(64);
  slm::quantize_q8(v.data(), 32 * 64, blocks.data());
  std::vector<float> back(v.size());
  slm::dequantize_q8(blocks.data(), 32 * 64, back.data());
  for (int b = 0; b < 64; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[size_t(b * 32 + i)]));
    const float scale = slm::f16_to_f32(blocks[size_t(b)].scale);
    EXPECT_NEAR(scale, amax / 127, amax / 127 * 1e-3) << b;  // f16-rounded amax/127
    for (int i = 0; i < 32; ++i) {
      const size_t j = size_t(b * 32 + i);
      EXPECT_LE(std::fabs(back[j] - v[j]), scale * 0.5f * (1 + 1e-3f) + 1e-30f) << b << " " << i;
      EXPECT_GE(blocks[size_t(b)].q[i], -127);
    }
  }
}

TEST(Q4, LayoutAndRange) {
  std::vector<float> v(32);
  for (int i = 0; i < 32; ++i) v[size_t(i)] = static_cast<float>(i - 16) * 0.5f;  // -8 .. 7.5
  slm::BlockQ4 block;
  slm::quantize_q4(v.data(), 32, &block);
  // The extreme -8 maps to level 0 (scale = -8 / -8 = 1): value = scale · (q - 8).
  EXPECT_EQ(slm::f16_to_f32(block.scale), 1.0f);
  EXPECT_EQ(block.q[0] & 0x0f, 0);           // element 0 = -8
  EXPECT_EQ(block.q[0] >> 4, 8);             // element 16 = 0
  std::vector<float> back(32);
  slm::dequantize_q4(&block, 32, back.data());
  for (int i = 0; i < 32; ++i) EXPECT_LE(std::fabs(back[size_t(i)] - v[size_t(i)]), 0.5f) << i;
  const slm::Tensor t(slm::DType::Q4, {32}, &block, nullptr);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(t.at(i), back[size_t(i)]) << i;
}

TEST(Quant, Q4WithinHalfAStep) {
  const auto v = block_values(2, 32 * 64);
  std::vector<slm::BlockQ4> blocks(64);
  slm::quantize_q4(v.data(), 32 * 64, blocks.data());
  std::vector<float> back(v.size());
  slm::dequantize_q4(blocks.data(), 32 * 64, back.data());
  for (int b = 0; b < 64; ++b) {
    // Levels run -8..7 and the extreme maps to -8 (llama.cpp's q4_0): values
    // of the other sign beyond 7.5 steps clip to 7, so they may be off by up
    // to one step; every other value is within half a step.
    const float scale = slm::f16_to_f32(blocks[size_t(b)].scale);
    const float step = std::fabs(scale);
    for (int i = 0; i < 32; ++i) {
      const size_t j = size_t(b * 32 + i);
      const bool clipped = v[j] / scale > 7.5f;
      EXPECT_LE(std::fabs(back[j] - v[j]), step * (clipped ? 1.0f : 0.5f) * (1 + 2e-3f) + 1e-30f) << b << " " << i;
    }
  }
}

TEST(Quant, ZeroBlockStaysZero) {
  std::vector<float> zeros(32, 0.0f), back(32, 1.0f);
  slm::BlockQ8 q8;
  slm::quantize_q8(zeros.data(), 32, &q8);
  slm::dequantize_q8(&q8, 32, back.data());
  for (float x : back) EXPECT_EQ(x, 0.0f);
  slm::BlockQ4 q4;
  slm::quantize_q4(zeros.data(), 32, &q4);
  slm::dequantize_q4(&q4, 32, back.data());
  for (float x : back) EXPECT_EQ(x, 0.0f);
}

// A NaN weight quantizes to the level of zero (casting NaN to an integer is
// undefined: the sanitizer build checks float-cast-overflow), and the other
// weights of its block keep their values.
TEST(Quant, NanWeightsBecomeZeroAndLeaveTheirBlockIntact) {
  std::vector<float> v(32), back(32);
  for (int i = 0; i < 32; ++i) v[size_t(i)] = 0.25f * static_cast<float>(i - 16);
  v[3] = std::nanf("");
  slm::BlockQ8 q8;
  slm::quantize_q8(v.data(), 32, &q8);
  EXPECT_EQ(q8.q[3], 0);
  slm::dequantize_q8(&q8, 32, back.data());
  for (int i = 0; i < 32; ++i) {
    if (i != 3) {
      EXPECT_NEAR(back[size_t(i)], v[size_t(i)], 0.5 * 4.0 / 127) << i;
    }
  }
  slm::BlockQ4 q4;
  slm::quantize_q4(v.data(), 32, &q4);
  EXPECT_EQ(q4.q[3] & 0x0f, 8);
}

TEST(Quant, TensorToQuantizedRowsAndBack) {
  slm::Tensor t = slm::Tensor::zeros(slm::DType::F32, {3, 64});
  const auto v = block_values(3, 3 * 64);
  std::copy(v.begin(), v.end(), t.data_as<float>());
  for (slm::DType dtype : {slm::DType::Q8, slm::DType::Q4}) {
    const slm::Tensor q = t.to(dtype);
    EXPECT_EQ(q.nbytes(), 3u * 2u * (dtype == slm::DType::Q8 ? 34u : 18u));
    const slm::Tensor back = q.to(slm::DType::F32);
    // Row by row, the same blocks quantize_* makes.
    std::vector<float> expected(v.size());
    if (dtype == slm::DType::Q8) {
      std::vector<slm::BlockQ8> blocks(6);
      slm::quantize_q8(v.data(), 192, blocks.data());
      slm::dequantize_q8(blocks.data(), 192, expected.data());
    } else {
      std::vector<slm::BlockQ4> blocks(6);
      slm::quantize_q4(v.data(), 192, blocks.data());
      slm::dequantize_q4(blocks.data(), 192, expected.data());
    }
    for (int64_t i = 0; i < t.numel(); ++i) {
      ASSERT_EQ(q.at(i), expected[size_t(i)]) << i;
      ASSERT_EQ(back.at(i), expected[size_t(i)]) << i;
    }
  }
  const slm::Tensor odd = slm::Tensor::zeros(slm::DType::F32, {2, 33});
  EXPECT_THROW(odd.to(slm::DType::Q8), slm::Error);
}

}  // namespace
