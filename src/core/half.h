// Conversions between f32 and the two 16-bit float formats, kept inline
// because kernels call them per element.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace slm {

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE half precision by bit manipulation, for compilers without _Float16
// on this target (clang before 15 on x86-64, which builds the fuzzers).
// Round to nearest even (F. Giesen's float_to_half_fast3_rtne); NaN stays NaN.
inline float f16_to_f32_portable(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in f32
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
  }
  const uint32_t bits = exponent == 0x1f ? (sign | 0x7f800000u | (mantissa << 13))
                                         : (sign | ((exponent + 112) << 23) | (mantissa << 13));
  return std::bit_cast<float>(bits);
}

inline uint16_t f32_to_f16_portable(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  bits &= 0x7fffffffu;
  if (bits >= 0x47800000u) return static_cast<uint16_t>(sign | (bits > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (bits < 0x38800000u) {
    // Below the smallest normal: adding 0.5 leaves the value rounded (to
    // nearest even) to a multiple of 2^-24 in the low mantissa bits.
    const float rounded = std::bit_cast<float>(bits) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(rounded) - 0x3f000000u));
  }
  const uint32_t odd = (bits >> 13) & 1u;
  bits += 0xc8000fffu + odd;  // rebias the exponent (127 -> 15) and round
  return static_cast<uint16_t>(sign | (bits >> 13));
}

// The compiler's own half type where C++ has it (x86-64: _Float16, compiled
// to F16C or a library call; AArch64: __fp16, GCC 12 having no C++
// _Float16 there), the portable bit arithmetic elsewhere.
#if defined(__x86_64__) && defined(__FLT16_MAX__)
inline float f16_to_f32(uint16_t h) { return static_cast<float>(std::bit_cast<_Float16>(h)); }
inline uint16_t f32_to_f16(float f) { return std::bit_cast<uint16_t>(static_cast<_Float16>(f)); }
#elif defined(__aarch64__)
inline float f16_to_f32(uint16_t h) { return static_cast<float>(std::bit_cast<__fp16>(h)); }
inline uint16_t f32_to_f16(float f) { return std::bit_cast<uint16_t>(static_cast<__fp16>(f)); }
#else
inline float f16_to_f32(uint16_t h) { return f16_to_f32_portable(h); }
inline uint16_t f32_to_f16(float f) { return f32_to_f16_portable(f); }
#endif

}  // namespace slm
