// Dot products of q8/q4 weights with q8-quantized activations on CPUs with
// AVX512_VNNI: vpdpbusd multiplies 32 unsigned by 32 signed bytes and adds
// them in groups of four into eight int32 lanes, so one 32-weight block is one
// instruction (two for q4, whose offset of 8 is taken out as 8·Σx).
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

// Everything below, and nothing included above, is compiled for this target.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "backend/cpu/simd_x86_inline.h"

namespace slm::cpu {

namespace {

// quantize_q8 (src/core/quant.cpp) with the same arithmetic step by step, so
// the blocks are bit-identical: amax/127 rounded through f16, values scaled
// by its inverse, rounded to nearest even and clamped to ±127.
void quantize_x(const float* x, int64_t k, BlockQ8* out) {
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    const __m512 lo = _mm512_loadu_ps(x + b * kQuantBlock), hi = _mm512_loadu_ps(x + b * kQuantBlock + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
    const uint16_t half = f32_to_f16(amax / 127.0f);
    const float scale = f16_to_f32(half);
    const __m512 inverse = _mm512_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
    const __m512i limit = _mm512_set1_epi32(127), neg_limit = _mm512_set1_epi32(-127);
    auto to_int8 = [&](__m512 v) {
      const __m512i q = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v, inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      return _mm512_cvtepi32_epi8(_mm512_max_epi32(_mm512_min_epi32(q, limit), neg_limit));
    };
    out[b].scale = half;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q), to_int8(lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q + 16), to_int8(hi));
  }
}

// Σ w·x of one block, q8 weights: vpdpbusd wants one unsigned operand, so
// the weights' signs move onto x (|w| · sign(w)·x).
inline __m256i block_q8(const BlockQ8& x, const BlockQ8& w) {
  const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q));
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q));
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq));
}

// Σ (w−8)·x of one block, q4 weights (the offset of 8 taken out as 8·Σx).
inline __m256i block_q4(const BlockQ8& x, const BlockQ4& w) {
  const __m256i levels = q4_levels(w);
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q));
  const __m256i products = _mm256_dpbusd_epi32(_mm256_setzero_si256(), levels, xq);
  const __m256i offset = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), xq);
  return _mm256_sub_epi32(products, offset);
}

}  // namespace

QuantDotKernels avx512vnni_kernels() {
  return {quantize_x, quantized_row_dot<BlockQ8, block_q8>, quantized_row_dot<BlockQ4, block_q4>};
}

}  // namespace slm::cpu
#endif
