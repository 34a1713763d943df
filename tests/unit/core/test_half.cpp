// f32 <-> bf16 / f16 conversions against known bit patterns, and round to
// nearest even checked against the two neighbouring representable values.
#include "core/half.h"

#include <slm/random.h>

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace {

using slm::bf16_to_f32;
using slm::f16_to_f32;
using slm::f32_to_bf16;
using slm::f32_to_f16;

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }

bool bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0; }
bool f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }

TEST(Bf16, KnownBitPatterns) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  // 1/3 = 0x3eaaaaab: the dropped half 0xaaab is above the midpoint, so it rounds up.
  EXPECT_EQ(f32_to_bf16(1.0f / 3.0f), 0x3eab);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808000)), 0x3f80);  // tie, even below
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f818000)), 0x3f82);  // tie, even above
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808001)), 0x3f81);  // just above the tie
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f807fff)), 0x3f80);  // just below the tie
  EXPECT_EQ(f32_to_bf16(from_bits(0xbf818000)), 0xbf82);  // sign does not change the rule
  // Rounding carries into the exponent: 1.9999999 -> 2.
  EXPECT_EQ(f32_to_bf16(from_bits(0x3fffffff)), 0x4000);
  // FLT_MAX is above bf16's largest finite value by more than half an ulp: inf, as PyTorch gives.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f7f7fff)), 0x7f7f);  // just below the midpoint: stays finite
}

TEST(Bf16, NanStaysNanInfStaysInf) {
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload lives only in the low 16 bits must not become inf.
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(from_bits(0x7f800001))));
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(from_bits(0xff800001))));
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(from_bits(0x7fffffff))));  // rounding up must not wrap to 0x8000
  EXPECT_EQ(f32_to_bf16(from_bits(0xffc00000)) & 0x8000, 0x8000);  // sign kept
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
  EXPECT_TRUE(std::isinf(bf16_to_f32(0x7f80)));
  EXPECT_TRUE(std::isinf(bf16_to_f32(0xff80)) && bf16_to_f32(0xff80) < 0);
}

TEST(Bf16, Subnormals) {
  EXPECT_EQ(f32_to_bf16(from_bits(0x00000001)), 0x0000);  // smallest f32 subnormal rounds to zero
  EXPECT_EQ(f32_to_bf16(from_bits(0x80000001)), 0x8000);  // ... keeping its sign
  EXPECT_EQ(f32_to_bf16(from_bits(0x00010000)), 0x0001);  // smallest bf16 subnormal, exact
  EXPECT_EQ(f32_to_bf16(from_bits(0x00018000)), 0x0002);  // tie between 1 and 2: even
  EXPECT_EQ(f32_to_bf16(from_bits(0x00028000)), 0x0002);  // tie between 2 and 3: even
  EXPECT_EQ(bits_of(bf16_to_f32(0x0001)), 0x00010000u);
  EXPECT_EQ(bits_of(bf16_to_f32(0x807f)), 0x807f0000u);
}

TEST(Bf16, EveryValueRoundTripsExactly) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    if (bf16_is_nan(bits)) continue;
    ASSERT_EQ(f32_to_bf16(bf16_to_f32(bits)), bits) << std::hex << h;
  }
}

// For random f32 values, the result is the nearer of the two neighbouring
// bf16 values (the even one on a tie), judged in double precision.
TEST(Bf16, NearestOfNeighboursOnRandomValues) {
  slm::Rng rng(7);
  for (int i = 0; i < 200000; ++i) {
    const auto bits = static_cast<uint32_t>(rng.next());
    const float x = from_bits(bits);
    if (!std::isfinite(x)) continue;
    const auto down = static_cast<uint16_t>(bits >> 16);  // truncation: toward zero
    const auto up = static_cast<uint16_t>(down + 1);      // next away from zero (may be inf)
    const double dd = std::fabs(static_cast<double>(bf16_to_f32(down)) - x);
    // Past the largest finite value, "up" is inf; round as if it were 2^128 (IEEE overflow rule).
    const double up_value = (up & 0x7fff) == 0x7f80 ? std::copysign(0x1p128, x) : bf16_to_f32(up);
    const double du = std::fabs(up_value - x);
    const uint16_t expected = dd < du ? down : du < dd ? up : ((down & 1) == 0 ? down : up);
    ASSERT_EQ(f32_to_bf16(x), expected) << std::hex << bits;
  }
}

TEST(F16, KnownBitPatterns) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(0.5f), 0x3800);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);  // largest finite
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
}

TEST(F16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);        // tie, even below
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);    // tie, even above
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the midpoint to 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the midpoint rounds to even: inf
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e6f), 0xfc00);
}

TEST(F16, Subnormals) {
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);          // smallest subnormal
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);          // tie between 0 and 1: even
  EXPECT_EQ(f32_to_f16(0x1.8p-25f), 0x0001);        // above the tie
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);      // tie between 1 and 2: even
  EXPECT_EQ(f32_to_f16(-0x1p-24f), 0x8001);
  EXPECT_EQ(f32_to_f16(0x1p-14f), 0x0400);          // smallest normal
  EXPECT_EQ(f32_to_f16(0x1p-14f - 0x1p-24f), 0x03ff);  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 0x1p-14f - 0x1p-24f);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
}

TEST(F16, NanAndInf) {
  EXPECT_TRUE(f16_is_nan(f32_to_f16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(f16_is_nan(f32_to_f16(from_bits(0x7f800001))));  // payload below f16's mantissa
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(F16, EveryValueRoundTripsExactly) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    if (f16_is_nan(bits)) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(bits)), bits) << std::hex << h;
  }
}

// Random f32 values in f16's range (normal and subnormal): the nearer of the
// two f16 neighbours, even on a tie.
TEST(F16, NearestOfNeighboursOnRandomValues) {
  slm::Rng rng(11);
  for (int i = 0; i < 200000; ++i) {
    // Magnitudes from 2^-26 to 2^16: subnormals, normals and overflow.
    const double magnitude = std::ldexp(1.0 + rng.uniform(), static_cast<int>(rng.next() % 42) - 26);
    const auto x = static_cast<float>(rng.uniform() < 0.5 ? -magnitude : magnitude);
    const uint16_t got = f32_to_f16(x);
    const double value = f16_to_f32(got);
    // Neighbours of the result along the number line (same sign).
    const uint16_t sign = got & 0x8000;
    const uint16_t mag = got & 0x7fff;
    const double err = std::fabs(value - x);
    if (mag == 0x7c00) {  // inf: only when x is at or beyond the midpoint 65520
      ASSERT_GE(std::fabs(x), 65520.0) << x;
      continue;
    }
    ASSERT_LT(mag, 0x7c00) << x;
    if (mag > 0) {
      const double below = f16_to_f32(static_cast<uint16_t>(sign | (mag - 1)));
      ASSERT_LE(err, std::fabs(below - x)) << x;
      if (err == std::fabs(below - x)) {
        ASSERT_EQ(mag & 1, 0) << "tie not to even: " << x;
      }
    }
    if (mag + 1 < 0x7c00) {
      const double above = f16_to_f32(static_cast<uint16_t>(sign | (mag + 1)));
      ASSERT_LE(err, std::fabs(above - x)) << x;
      if (err == std::fabs(above - x)) {
        ASSERT_EQ(mag & 1, 0) << "tie not to even: " << x;
      }
    } else {
      ASSERT_LT(std::fabs(x), 65520.0) << x;
    }
  }
}

}  // namespace

namespace {

// The bit-manipulation twins (used where the compiler lacks _Float16) agree
// with the compiler's conversions bit for bit.
TEST(F16, PortableConversionsAgreeWithNative) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float portable = slm::f16_to_f32_portable(bits);
    if (f16_is_nan(bits)) {
      ASSERT_TRUE(std::isnan(portable)) << std::hex << h;
      continue;
    }
    ASSERT_EQ(bits_of(portable), bits_of(f16_to_f32(bits))) << std::hex << h;
  }
  // Every 257th f32 bit pattern (16.7 million), plus every f16 midpoint.
  for (uint64_t b = 0; b <= 0xffffffffull; b += 257) {
    const float x = from_bits(static_cast<uint32_t>(b));
    const uint16_t want = f32_to_f16(x);
    const uint16_t got = slm::f32_to_f16_portable(x);
    if (std::isnan(x)) {
      ASSERT_TRUE(f16_is_nan(got)) << std::hex << b;
      ASSERT_EQ(got & 0x8000, want & 0x8000) << std::hex << b;
      continue;
    }
    ASSERT_EQ(got, want) << std::hex << b;
  }
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    for (float sign : {1.0f, -1.0f}) {
      const double mid = (double(f16_to_f32(static_cast<uint16_t>(h))) + double(f16_to_f32(static_cast<uint16_t>(h + 1)))) / 2;
      const auto x = static_cast<float>(sign * mid);
      ASSERT_EQ(slm::f32_to_f16_portable(x), f32_to_f16(x)) << std::hex << h;
      ASSERT_EQ(slm::f32_to_f16_portable(std::nextafter(x, 0.0f)), f32_to_f16(std::nextafter(x, 0.0f))) << std::hex << h;
    }
  }
}

}  // namespace
