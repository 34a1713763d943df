// The operands of the AVX-512 GEMMs as they prepare them, shared by the
// AVX512-BF16, AVX512-VNNI and AMX files: bf16 weight panels as
// [K/2][columns] 32-bit pairs (the B operand of vdpbf16ps, and of
// tdpbf16ps for the input gradient), prompt rows quantized to q8 (the
// integer GEMMs' activations), weight blocks as signed bytes, and the VNNI
// GEMM's int8 panels ([block][vector][quad][16][4] bytes). Include it after
// a file's target pragma (AVX512F/BW/VL and F16C at least) and after
// simd_avx512_inline.h and simd_x86_inline.h; internal linkage, as those.
#pragma once

#include "core/half.h"
#include "core/quant.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace slm::cpu {
namespace {

constexpr int64_t kQuads = kQuantBlock / 4;

// Panel of a [N][K] B (row stride ldb): rows [0, cols) (cols ≤ kCols, a
// multiple of 16) into
// packed[(K+1)/2][kCols] words, zero-padded. A pair (B[c][2p], B[c][2p+1]) is
// one 32-bit word of row c, so packing is a transpose of 32-bit words: 16×16
// blocks in registers, the ragged edges word by word.
template <int64_t kCols>
void pack_panel_nk(const uint16_t* B, int64_t ldb, int64_t K, int64_t cols, uint32_t* out) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t full_pairs = K / 2;
  const int64_t block_pairs = full_pairs / 16 * 16;
  for (int64_t c0 = 0; c0 < kCols; c0 += 16) {
    const bool full_rows = c0 + 16 <= cols;
    const int64_t vector_pairs = full_rows ? block_pairs : 0;
    __m512i r[16];
    for (int64_t p0 = 0; p0 < vector_pairs; p0 += 16) {
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(B + (c0 + i) * ldb + 2 * p0);
      transpose_16x16(r);
      for (int j = 0; j < 16; ++j) _mm512_storeu_si512(out + (p0 + j) * kCols + c0, r[j]);
    }
    for (int64_t c = c0; c < c0 + 16; ++c) {
      if (c >= cols) {
        for (int64_t p = vector_pairs; p < pairs; ++p) out[p * kCols + c] = 0;
        continue;
      }
      const uint16_t* row = B + c * ldb;
      for (int64_t p = vector_pairs; p < full_pairs; ++p) {
        uint32_t word;
        std::memcpy(&word, row + 2 * p, sizeof word);
        out[p * kCols + c] = word;
      }
      if (K % 2) out[full_pairs * kCols + c] = row[K - 1];
    }
  }
}

// Panel of a [K][N] B (row stride ldb): columns [0, cols) into the same
// packed layout. Here a pair spans rows 2p and 2p+1, so each packed vector
// interleaves 16 words of two rows; masked loads give the zero padding past
// `cols` and past an odd K.
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

// A panel of kVectors × 16 weight rows packed for the integer GEMMs, per
// block: [vector][quad of k][16 columns][4 bytes], with each column's f32
// scale and its -128·Σw, for `blocks` blocks, 64-byte aligned.
template <int64_t kVectors>
class PackedPanel {
 public:
  void reserve(int64_t blocks) {
    const size_t words = static_cast<size_t>(blocks * kVectors * (kQuads + 2) * 16) + 16;
    if (storage_.size() < words) storage_.resize(words);
    const uintptr_t address = reinterpret_cast<uintptr_t>(storage_.data());
    weights_ = storage_.data() + (64 - address % 64) % 64 / sizeof(int32_t);
    blocks_ = blocks;
  }
  // 16 columns × 4 bytes: quad q of vector v of block b.
  int32_t* weights(int64_t b, int64_t v, int64_t q) { return weights_ + ((b * kVectors + v) * kQuads + q) * 16; }
  float* scales(int64_t b, int64_t v) {
    return reinterpret_cast<float*>(weights_ + (blocks_ * kVectors * kQuads + b * kVectors + v) * 16);
  }
  int32_t* offsets(int64_t b, int64_t v) {
    return weights_ + (blocks_ * kVectors * (kQuads + 1) + b * kVectors + v) * 16;
  }

 private:
  std::vector<int32_t> storage_;
  int32_t* weights_ = nullptr;
  int64_t blocks_ = 0;
};

// A weight block's 32 values as signed bytes (q4: its levels less 8).
template <class Block>
__m256i block_values(const Block& w);
template <>
inline __m256i block_values<BlockQ8>(const BlockQ8& w) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q));
}
template <>
inline __m256i block_values<BlockQ4>(const BlockQ4& w) {
  return _mm256_sub_epi8(q4_levels(w), _mm256_set1_epi8(8));
}

// Packs weight rows [0, cols) (cols ≤ 16·kVectors) of w (rows of `blocks`
// blocks). Two blocks of 16 rows are one 16×16 transpose of 32-bit words:
// row i's 16 words (both blocks) become word i of 16 vectors, one per quad.
template <int64_t kVectors, class Block>
void pack_panel(const Block* w, int64_t blocks, int64_t cols, PackedPanel<kVectors>& panel) {
  panel.reserve(blocks);
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t v = 0; v < kVectors; ++v) {
    const int64_t c0 = 16 * v;
    for (int64_t b = 0; b < blocks; b += 2) {
      const bool pair = b + 1 < blocks;
      __m512i r[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (c0 + i >= cols) {
          r[i] = _mm512_setzero_si512();
          continue;
        }
        const Block* row = w + (c0 + i) * blocks;
        const __m256i second = pair ? block_values(row[b + 1]) : _mm256_setzero_si256();
        r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(block_values(row[b])), second, 1);
      }
      transpose_16x16(r);
      for (int64_t half = 0; half < (pair ? 2 : 1); ++half) {
        __m512i sum = _mm512_setzero_si512();
        for (int64_t q = 0; q < kQuads; ++q) {
          const __m512i quad = r[half * kQuads + q];
          _mm512_store_si512(panel.weights(b + half, v, q), quad);
          sum = _mm512_dpbusd_epi32(sum, ones, quad);
        }
        _mm512_store_si512(panel.offsets(b + half, v), _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
        float* scales = panel.scales(b + half, v);
        for (int64_t i = 0; i < 16; ++i) scales[i] = c0 + i < cols ? scale_of(w[(c0 + i) * blocks + b + half].scale) : 0.0f;
      }
    }
  }
}

}  // namespace
}  // namespace slm::cpu
