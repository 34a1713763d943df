// The operands the AVX-512 GEMMs share: the AVX512-BF16 and AMX files pack
// a [K][N] bf16 weight into [K/2][columns] 32-bit pairs (the B operand of
// vdpbf16ps and tdpbf16ps), the AVX512-VNNI and AMX files quantize prompt
// rows to q8 (the integer GEMMs' activations). Include it after a file's
// target pragma (AVX512F/BW/VL at least) and after simd_avx512_inline.h;
// internal linkage, as that.
#pragma once

#include "core/half.h"
#include "core/quant.h"

#include <immintrin.h>

#include <cstdint>

namespace slm::cpu {
namespace {

constexpr int64_t kQuads = kQuantBlock / 4;

// Panel of a [K][N] B (row stride ldb): columns [0, cols) (cols ≤ kCols, a
// multiple of 16) into packed[(K+1)/2][kCols] words, zero-padded, a pair
// (B[2p][c], B[2p+1][c]) one word: each packed vector interleaves 16 words
// of two rows; masked loads give the zero padding past `cols` and past an
// odd K.
template <int64_t kCols>
void pack_panel_kn(const uint16_t* B, int64_t ldb, int64_t K, int64_t cols, uint32_t* out) {
  alignas(64) static constexpr uint16_t kInterleave[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                            8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i interleave = _mm512_load_si512(kInterleave);
  const int64_t pairs = (K + 1) / 2;
  constexpr int64_t kVectors = kCols / 16;
  __mmask16 masks[kVectors];
  for (int64_t v = 0; v < kVectors; ++v) {
    masks[v] = lane_mask(cols - 16 * v);
  }
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* even = B + 2 * p * ldb;
    const uint16_t* odd = 2 * p + 1 < K ? even + ldb : nullptr;
    for (int64_t v = 0; v < kVectors; ++v) {
      const __m256i a = _mm256_maskz_loadu_epi16(masks[v], even + 16 * v);
      const __m256i b = odd ? _mm256_maskz_loadu_epi16(masks[v], odd + 16 * v) : _mm256_setzero_si256();
      const __m512i words =
          _mm512_permutex2var_epi16(_mm512_castsi256_si512(a), interleave, _mm512_castsi256_si512(b));
      _mm512_storeu_si512(out + p * kCols + 16 * v, words);
    }
  }
}

// One block of quantize_q8 (src/core/quant.cpp) with the same arithmetic
// step by step, so the blocks are bit-identical: amax/127 rounded through
// f16, values scaled by its inverse, rounded to nearest even and clamped to
// ±127. Returns the f16 scale; the 32 values go to `values`.
inline uint16_t quantize_block(const float* x, __m256i* values) {
  const __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
  const uint16_t half = f32_to_f16(amax / 127.0f);
  const float scale = f16_to_f32(half);
  const __m512 inverse = _mm512_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
  const __m512i limit = _mm512_set1_epi32(127), neg_limit = _mm512_set1_epi32(-127);
  auto to_int8 = [&](__m512 v) {
    const __m512i q = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v, inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvtepi32_epi8(_mm512_max_epi32(_mm512_min_epi32(q, limit), neg_limit));
  };
  *values = _mm256_set_m128i(to_int8(hi), to_int8(lo));
  return half;
}

// One activation row as QuantGemmKernels::prepare_x gives it: q8 values
// plus 128 as unsigned bytes, block scales as f32.
inline void prepare_x(const float* x, int64_t k, uint8_t* q, float* scales) {
  const __m256i offset = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    __m256i values;
    scales[b] = f16_to_f32(quantize_block(x + b * kQuantBlock, &values));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQuantBlock), _mm256_xor_si256(values, offset));
  }
}

}  // namespace
}  // namespace slm::cpu
