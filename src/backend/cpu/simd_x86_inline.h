// Small intrinsic helpers shared by the x86 instruction-set files. Include it
// after a file's `#pragma GCC target` (AVX2 and F16C at least), so it is
// compiled for that file's target. This is the one header those files take
// below the pragma, and it cannot leak the target into other files: its
// functions have internal linkage (anonymous namespace), and the headers it
// names are already included above the pragma by every includer.
#pragma once

#include "core/quant.h"

#include <immintrin.h>

#include <cstdint>

namespace slm::cpu {
namespace {

// Sum of the 8 lanes.
inline float horizontal_sum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// A quantized block's f16 scale as f32, in one instruction.
inline float scale_of(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

// The 32 levels (0..15) of a q4 block as bytes in element order: byte j
// holds elements j (low nibble) and j+16 (high), so the low nibbles come
// first, then the high ones.
inline __m256i q4_levels(const BlockQ4& w) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.q));
  const __m128i nibble = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), nibble), _mm_and_si128(bytes, nibble));
}

// A weight block's 32 values as signed bytes (q4: its levels less 8), for
// the integer GEMMs' weight panels (AVX2 at least).
inline __m256i block_values(const BlockQ8& w) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q)); }
inline __m256i block_values(const BlockQ4& w) { return _mm256_sub_epi8(q4_levels(w), _mm256_set1_epi8(8)); }

}  // namespace
}  // namespace slm::cpu
