#include "core/kquant.h"

#include "core/half.h"

#include <cstring>
#include <type_traits>

namespace slm {

namespace {

// Scale and min of sub-block j (of 8): the first four keep their 6 bits in
// the low bits of bytes j and j+4; the last four split theirs between a
// nibble of byte j+4 and the top two bits of bytes j-4 and j.
void scale_min(int j, const uint8_t* q, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

template <class Block>
Block load(const void* blocks, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(blocks) + static_cast<size_t>(i) * sizeof(Block), sizeof b);
  return b;
}

// Q4_K and Q5_K: sub-blocks of 32 with 6-bit scales and mins; each 32 bytes
// of qs hold two sub-blocks, the low nibbles, then the high. Q5_K adds a
// fifth bit: bit j of qh[l] for element l of sub-block j.
template <class Block>
void dequantize_k_nibbles(const void* blocks, int64_t n, float* out) {
  constexpr bool kFifthBit = std::is_same_v<Block, BlockQ5K>;
  for (int64_t i = 0; i < n / kKQuantBlock; ++i) {
    const auto b = load<Block>(blocks, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    float* y = out + i * kKQuantBlock;
    const uint8_t* q = b.qs;
    auto level = [&](int l, int shift, int j) {
      int v = (q[l] >> shift) & 0xF;
      if constexpr (kFifthBit) v |= ((b.qh[l] >> j) & 1) << 4;
      return static_cast<float>(v);
    };
    for (int j = 0; j < 8; j += 2, q += 32) {
      uint8_t s0, m0, s1, m1;
      scale_min(j, b.scales, s0, m0);
      scale_min(j + 1, b.scales, s1, m1);
      for (int l = 0; l < 32; ++l) *y++ = d * s0 * level(l, 0, j) - dmin * m0;
      for (int l = 0; l < 32; ++l) *y++ = d * s1 * level(l, 4, j + 1) - dmin * m1;
    }
  }
}

// Q4_1, Q5_0 and Q5_1: one scale (and a minimum) per 32 weights; byte j of
// qs holds weights j (low nibble) and j + 16 (high), Q5's qh their fifth bits.
template <class Block>
void dequantize_small_blocks(const void* blocks, int64_t n, float* out) {
  constexpr bool kFifthBit = !std::is_same_v<Block, BlockQ4_1>;
  constexpr bool kMinimum = !std::is_same_v<Block, BlockQ5_0>;
  for (int64_t i = 0; i < n / 32; ++i) {
    const auto b = load<Block>(blocks, i);
    const float d = f16_to_f32(b.d);
    float m = 0.0f;
    uint32_t qh = 0;
    if constexpr (kMinimum) m = f16_to_f32(b.m);
    if constexpr (kFifthBit) std::memcpy(&qh, b.qh, sizeof qh);
    const int offset = kMinimum ? 0 : 16;
    float* y = out + i * 32;
    for (int j = 0; j < 16; ++j) {
      const int low = (b.qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1) << 4);
      const int high = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
      y[j] = d * static_cast<float>(low - offset) + m;
      y[j + 16] = d * static_cast<float>(high - offset) + m;
    }
  }
}

}  // namespace

void dequantize_q4_1(const void* blocks, int64_t n, float* out) { dequantize_small_blocks<BlockQ4_1>(blocks, n, out); }
void dequantize_q5_0(const void* blocks, int64_t n, float* out) { dequantize_small_blocks<BlockQ5_0>(blocks, n, out); }
void dequantize_q5_1(const void* blocks, int64_t n, float* out) { dequantize_small_blocks<BlockQ5_1>(blocks, n, out); }

void dequantize_q4_k(const void* blocks, int64_t n, float* out) { dequantize_k_nibbles<BlockQ4K>(blocks, n, out); }
void dequantize_q5_k(const void* blocks, int64_t n, float* out) { dequantize_k_nibbles<BlockQ5K>(blocks, n, out); }

void dequantize_q6_k(const void* blocks, int64_t n, float* out) {
  for (int64_t i = 0; i < n / kKQuantBlock; ++i) {
    const auto b = load<BlockQ6K>(blocks, i);
    const float d = f16_to_f32(b.d);
    float* y = out + i * kKQuantBlock;
    // Two halves of 128: in each, ql's 64 bytes give the low nibbles of four
    // runs of 32 (bytes 0-31 low, 32-63 low, 0-31 high, 32-63 high) and qh's
    // 32 bytes their top two bits, two bits per run.
    for (int half = 0; half < 2; ++half, y += 128) {
      const uint8_t* ql = b.ql + 64 * half;
      const uint8_t* qh = b.qh + 32 * half;
      const int8_t* sc = b.scales + 8 * half;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[s] * static_cast<float>(q1);
        y[l + 32] = d * sc[s + 2] * static_cast<float>(q2);
        y[l + 64] = d * sc[s + 4] * static_cast<float>(q3);
        y[l + 96] = d * sc[s + 6] * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace slm
