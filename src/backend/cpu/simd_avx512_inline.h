// Intrinsic helpers shared by the AVX-512 instruction-set files. Include it
// after a file's `#pragma GCC target` (AVX512F at least), as
// simd_x86_inline.h is: internal linkage, so the target cannot leak.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace slm::cpu {
namespace {

// The first `lanes` of 16 32-bit lanes (`lanes` may lie outside [0, 16]):
// the mask of a tail, or of the part of a vector inside a bound.
inline __mmask16 lane_mask(int64_t lanes) {
  return lanes >= 16 ? static_cast<__mmask16>(0xffff) : lanes <= 0 ? 0 : static_cast<__mmask16>((1u << lanes) - 1u);
}

// The same over 32 16-bit lanes.
inline __mmask32 lane_mask32(int64_t lanes) {
  return lanes >= 32 ? ~__mmask32{0} : lanes <= 0 ? 0 : static_cast<__mmask32>((uint64_t{1} << lanes) - 1u);
}

// Transposes a 16×16 block of 32-bit words: r[i] holds row i, and on return
// r[j] holds column j. Three rounds of shuffles (within 128-bit lanes by
// 32 and 64 bits, then whole lanes).
void transpose_16x16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4i+j], lane L: rows 4i..4i+3 of column 4L+j.
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
    const __m512i w0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44);
    const __m512i w1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
    r[j] = _mm512_shuffle_i32x4(v0, w0, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(v1, w1, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
  }
}

}  // namespace
}  // namespace slm::cpu
