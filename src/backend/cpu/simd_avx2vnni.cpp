// The integer products of q8/q4 weights on CPUs with AVX-VNNI but not
// AVX-512 (Intel's client cores since Alder Lake): vpdpbusd on 256-bit
// registers multiplies 32 unsigned by 32 signed bytes and adds them in
// fours into eight int32 lanes, one instruction for a block where AVX2
// takes four (vpmaddubsw, vpmaddwd and the sign moves), and four times the
// multiplies of an f32 FMA, where the avx2 path widens prompt weights to f32
// for its FMA GEMM. Decode's dot products come first, then the GEMM of
// prompts; the rest of the avx2vnni path is avx2's.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

// Everything below, and nothing included above, is compiled for this target.
SLM_TARGET_BEGIN("avx2,fma,f16c,avxvnni")

#include "backend/cpu/simd_x86_arranged.h"
#include "backend/cpu/simd_x86_quant_gemm.h"

namespace slm::cpu {

namespace {

// Σ w·x of one q8 block: the weights read unsigned (w + 128) against x,
// from the block's start value; the two scales multiply it into the total.
[[gnu::always_inline]] inline void add_q8_block(const ArrangedBlock& x, const BlockQ8& w, __m256& total) {
  const __m256i start = _mm256_setr_epi32(x.minus_128_sum, 0, 0, 0, 0, 0, 0, 0);
  const __m256i weights =
      _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q)), _mm256_set1_epi8(static_cast<char>(0x80)));
  const __m256i sum = _mm256_dpbusd_avx_epi32(start, weights, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q)));
  total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(x.scale * scale_of(w.scale)), total);
}

// Σ w·x of two q4 blocks (Two) or a last one: the nibble bytes side by
// side, low nibbles against x.low and high ones against x.high.
struct AddQ4Pair {
  template <bool Two>
  [[gnu::always_inline]] static void add(const ArrangedPair& x, const BlockQ4* w, __m256& total) {
    const __m256i bytes = q4_pair_bytes<Two>(w), nibble = _mm256_set1_epi8(0x0f);
    __m256i sum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.minus_8_sum));
    sum = _mm256_dpbusd_avx_epi32(sum, _mm256_and_si256(bytes, nibble),
                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.low)));
    sum = _mm256_dpbusd_avx_epi32(sum, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble),
                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.high)));
    total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), q4_pair_scales<Two>(x, w), total);
  }
};

// A quad's products with vpdpbusd: int32 sums from the column's offset.
struct VnniStep {
  using Sum = __m256i;
  static __m256i start(__m256i offset) { return offset; }
  static __m256i add(__m256i sum, __m256i x, __m256i w) { return _mm256_dpbusd_avx_epi32(sum, x, w); }
  static __m256i finish(__m256i sum, const int32_t*) { return sum; }
};

}  // namespace

// quantize_x is avx2's: the blocks are quantize_q8's either way.
QuantDotKernels avx2vnni_quant_kernels() {
  return {avx2_quant_kernels().quantize_x, arranged_bytes, arrange_x, q8_arranged_rows<add_q8_block>,
          q4_arranged_rows<AddQ4Pair>};
}

QuantGemmKernels avx2vnni_gemm_kernels() {
  return {prepare_x, gemm_of_dtype<VnniStep, VnniStep>, nullptr, nullptr, nullptr};
}

}  // namespace slm::cpu
SLM_TARGET_END
#endif
