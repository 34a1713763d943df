// Dot products of q8/q4 weights with q8-quantized activations on CPUs with
// AVX512_VNNI: vpdpbusd multiplies 64 unsigned by 64 signed bytes and adds
// them in groups of four into sixteen int32 lanes, so two 32-weight blocks
// are one instruction. Below them, the integer GEMM of prompts with the same
// instruction.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

// Everything below, and nothing included above, is compiled for this target.
SLM_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "backend/cpu/simd_avx512_inline.h"
#include "backend/cpu/simd_x86_inline.h"

namespace slm::cpu {

namespace {

// One block of quantize_q8 (src/core/quant.cpp) with the same arithmetic
// step by step, so the blocks are bit-identical: amax/127 rounded through
// f16, values scaled by its inverse, rounded to nearest even and clamped to
// ±127. Returns the f16 scale; the 32 values go to `values`.
uint16_t quantize_block(const float* x, __m256i* values) {
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

void quantize_x(const float* x, int64_t k, BlockQ8* out) {
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    __m256i values;
    out[b].scale = quantize_block(x + b * kQuantBlock, &values);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), values);
  }
}

// The dot products read x arranged per pair of blocks, so that one 512-bit
// vpdpbusd takes two blocks: their 64 values, each block's scale spread
// over the 8 lanes its sum lands in, and -o·Σx of each block in the first of
// those lanes, the start of the int32 sums that takes the offset o of
// unsigned weights back out (q4's levels are w + 8; q8 weights are read as
// w + 128). An odd last block pairs with zeros.
struct ArrangedPair {
  int8_t q[64];
  float scale[16];
  int32_t minus_8_sum[16];
  int32_t minus_128_sum[16];
};

int64_t arranged_bytes(int64_t k) { return (k / kQuantBlock + 1) / 2 * static_cast<int64_t>(sizeof(ArrangedPair)); }

void arrange_x(const BlockQ8* x, int64_t k, void* out) {
  const int64_t blocks = k / kQuantBlock;
  auto* pairs = static_cast<ArrangedPair*>(out);
  for (int64_t p = 0; p < (blocks + 1) / 2; ++p) {
    ArrangedPair& a = pairs[p];
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t b = 2 * p + half;
      int32_t sum = 0;
      float scale = 0.0f;
      if (b < blocks) {
        std::memcpy(a.q + 32 * half, x[b].q, 32);
        for (int i = 0; i < kQuantBlock; ++i) sum += x[b].q[i];
        scale = f16_to_f32(x[b].scale);
      } else {
        std::memset(a.q + 32 * half, 0, 32);
      }
      for (int i = 0; i < 8; ++i) {
        a.scale[8 * half + i] = scale;
        a.minus_8_sum[8 * half + i] = i == 0 ? -8 * sum : 0;
        a.minus_128_sum[8 * half + i] = i == 0 ? -128 * sum : 0;
      }
    }
  }
}

// Two q8 blocks (the second zero when absent) as unsigned bytes w + 128.
inline __m512i pair_levels(const BlockQ8* w, bool two) {
  const __m256i first = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[0].q));
  const __m256i second = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[1].q)) : _mm256_setzero_si256();
  return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1),
                          _mm512_set1_epi8(static_cast<char>(0x80)));
}

// Two q4 blocks' levels in element order: the nibbles of both in one
// register, shifted copies beside them, and the 128-bit lanes reordered to
// [first low, first high, second low, second high].
inline __m512i pair_levels(const BlockQ4* w, bool two) {
  const __m128i first = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[0].q));
  const __m128i second = two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[1].q)) : _mm_setzero_si128();
  const __m256i bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(first), second, 1);
  const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(bytes), _mm256_srli_epi16(bytes, 4), 1);
  const __m512i levels = _mm512_and_si512(both, _mm512_set1_epi8(0x0f));
  return _mm512_shuffle_i64x2(levels, levels, _MM_SHUFFLE(3, 1, 2, 0));
}

template <class Block>
constexpr int32_t kLevelOffset = 128;
template <>
constexpr int32_t kLevelOffset<BlockQ4> = 8;

// Σ w·x of a row, two blocks per step in two chains. The f16 scales of a
// weight pair are widened together and spread over their lanes.
template <class Block>
float arranged_row_dot(const void* arranged, const Block* w, int64_t k) {
  // Ask for the weights a kilobyte ahead (past the row's end, the next
  // row's): a step consumes too few bytes for out-of-order execution alone
  // to keep enough loads in flight.
  constexpr int64_t kPrefetchBytes = 1024;
  const auto* x = static_cast<const ArrangedPair*>(arranged);
  const int64_t blocks = k / kQuantBlock;
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  auto step = [&](int64_t p, bool two, __m512& total) {
    const ArrangedPair& a = x[p];
    const Block* pair = w + 2 * p;
    const __m512i start = _mm512_loadu_si512(kLevelOffset<Block> == 8 ? a.minus_8_sum : a.minus_128_sum);
    const __m512i sum = _mm512_dpbusd_epi32(start, pair_levels(pair, two), _mm512_loadu_si512(a.q));
    const __m128i halves = _mm_insert_epi16(_mm_cvtsi32_si128(pair[0].scale), two ? pair[1].scale : 0, 1);
    const __m512 w_scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_cvtph_ps(halves)));
    total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(w_scale, _mm512_loadu_ps(a.scale)), total);
  };
  const int64_t full_pairs = blocks / 2;
  int64_t p = 0;
  for (; p + 2 <= full_pairs; p += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(w + 2 * p) + kPrefetchBytes, _MM_HINT_T0);
    step(p, true, acc[0]);
    step(p + 1, true, acc[1]);
  }
  if (p < full_pairs) step(p++, true, acc[0]);
  if (blocks % 2) step(p, false, acc[1]);
  return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
}

// The integer GEMM of prompts has the outer-product shape of the bf16 GEMM,
// in bytes: vpdpbusd multiplies four consecutive bytes of an activation row
// (broadcast, unsigned: x + 128) with four bytes of each of 16 weight
// columns (signed) and adds them into that column's int32 lane. Weights are
// repacked per panel of 48 rows into, per block, [vector][quad of k][16
// columns][4 bytes], with each column's f32 scale and its -128·Σw, the
// value the int32 accumulators start from so that the offset of x cancels.
// A tile of 4 rows × 48 columns holds 12 int32 sums of the block in
// progress and 12 f32 totals; per quad of k it loads 3 weight vectors and
// broadcasts 4 activation words for 12 vpdpbusd.
constexpr int64_t kGemmRows = 4;
constexpr int64_t kGemmVectors = 3;
constexpr int64_t kGemmCols = 16 * kGemmVectors;
constexpr int64_t kQuads = kQuantBlock / 4;

// A panel's packed weights, for `blocks` blocks, 64-byte aligned.
class PackedPanel {
 public:
  void reserve(int64_t blocks) {
    const size_t words = static_cast<size_t>(blocks * kGemmVectors * (kQuads + 2) * 16) + 16;
    if (storage_.size() < words) storage_.resize(words);
    const uintptr_t address = reinterpret_cast<uintptr_t>(storage_.data());
    weights_ = storage_.data() + (64 - address % 64) % 64 / sizeof(int32_t);
    blocks_ = blocks;
  }
  // 16 columns × 4 bytes: quad q of vector v of block b.
  int32_t* weights(int64_t b, int64_t v, int64_t q) { return weights_ + ((b * kGemmVectors + v) * kQuads + q) * 16; }
  float* scales(int64_t b, int64_t v) {
    return reinterpret_cast<float*>(weights_ + (blocks_ * kGemmVectors * kQuads + b * kGemmVectors + v) * 16);
  }
  int32_t* offsets(int64_t b, int64_t v) {
    return weights_ + (blocks_ * kGemmVectors * (kQuads + 1) + b * kGemmVectors + v) * 16;
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
__m256i block_values<BlockQ8>(const BlockQ8& w) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q));
}
template <>
__m256i block_values<BlockQ4>(const BlockQ4& w) {
  return _mm256_sub_epi8(q4_levels(w), _mm256_set1_epi8(8));
}

// Packs weight rows [0, cols) (cols ≤ kGemmCols) of w (rows of `blocks`
// blocks). Two blocks of 16 rows are one 16×16 transpose of 32-bit words:
// row i's 16 words (both blocks) become word i of 16 vectors, one per quad.
template <class Block>
void pack_panel(const Block* w, int64_t blocks, int64_t cols, PackedPanel& panel) {
  panel.reserve(blocks);
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t v = 0; v < kGemmVectors; ++v) {
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

template <int MR>
void gemm_tile(const uint8_t* xq, int64_t k, const float* xs, PackedPanel& panel, int64_t blocks, float* c,
               int64_t ldc, const __mmask16* masks) {
  __m512 total[MR][kGemmVectors];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kGemmVectors; ++v) total[i][v] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i sum[MR][kGemmVectors];
    for (int v = 0; v < kGemmVectors; ++v) {
      const __m512i offset = _mm512_load_si512(panel.offsets(b, v));
      for (int i = 0; i < MR; ++i) sum[i][v] = offset;
    }
    for (int64_t q = 0; q < kQuads; ++q) {
      __m512i w[kGemmVectors];
      for (int v = 0; v < kGemmVectors; ++v) w[v] = _mm512_load_si512(panel.weights(b, v, q));
      for (int i = 0; i < MR; ++i) {
        int32_t word;
        std::memcpy(&word, xq + i * k + b * kQuantBlock + 4 * q, sizeof word);
        const __m512i x = _mm512_set1_epi32(word);
        for (int v = 0; v < kGemmVectors; ++v) sum[i][v] = _mm512_dpbusd_epi32(sum[i][v], x, w[v]);
      }
    }
    __m512 scale[kGemmVectors];
    for (int v = 0; v < kGemmVectors; ++v) scale[v] = _mm512_load_ps(panel.scales(b, v));
    for (int i = 0; i < MR; ++i) {
      const __m512 x_scale = _mm512_set1_ps(xs[i * blocks + b]);
      for (int v = 0; v < kGemmVectors; ++v) {
        total[i][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[i][v]), _mm512_mul_ps(scale[v], x_scale), total[i][v]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kGemmVectors; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, masks[v], total[i][v]);
  }
}

using GemmTile = void (*)(const uint8_t*, int64_t, const float*, PackedPanel&, int64_t, float*, int64_t, const __mmask16*);
constexpr GemmTile kGemmTiles[kGemmRows] = {gemm_tile<1>, gemm_tile<2>, gemm_tile<3>, gemm_tile<4>};

void prepare_x(const float* x, int64_t k, uint8_t* q, float* scales) {
  const __m256i offset = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    __m256i values;
    scales[b] = f16_to_f32(quantize_block(x + b * kQuantBlock, &values));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQuantBlock), _mm256_xor_si256(values, offset));
  }
}

template <class Block>
void gemm_of(const uint8_t* xq, const float* xs, int64_t m, const Block* w, int64_t n, int64_t k, float* c,
             int64_t ldc) {
  const int64_t blocks = k / kQuantBlock;
  thread_local PackedPanel panel;
  for (int64_t n0 = 0; n0 < n; n0 += kGemmCols) {
    const int64_t cols = std::min(kGemmCols, n - n0);
    pack_panel(w + n0 * blocks, blocks, cols, panel);
    __mmask16 masks[kGemmVectors];
    for (int64_t v = 0; v < kGemmVectors; ++v) masks[v] = lane_mask(cols - 16 * v);
    for (int64_t m0 = 0; m0 < m; m0 += kGemmRows) {
      const int64_t rows = std::min(kGemmRows, m - m0);
      kGemmTiles[rows - 1](xq + m0 * k, k, xs + m0 * blocks, panel, blocks, c + m0 * ldc + n0, ldc, masks);
    }
  }
}

void gemm(const uint8_t* xq, const float* xs, int64_t m, DType dtype, const void* w, int64_t n, int64_t k, float* c,
          int64_t ldc) {
  if (dtype == DType::Q8) {
    gemm_of(xq, xs, m, static_cast<const BlockQ8*>(w), n, k, c, ldc);
  } else {
    gemm_of(xq, xs, m, static_cast<const BlockQ4*>(w), n, k, c, ldc);
  }
}

}  // namespace

QuantDotKernels avx512vnni_kernels() {
  return {quantize_x, arranged_bytes, arrange_x, arranged_row_dot<BlockQ8>, arranged_row_dot<BlockQ4>};
}

QuantGemmKernels avx512vnni_gemm_kernels() { return {prepare_x, gemm}; }

}  // namespace slm::cpu
SLM_TARGET_END
#endif
