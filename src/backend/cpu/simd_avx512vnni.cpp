// Dot products of q8/q4 weights with q8-quantized activations on CPUs with
// AVX512_VNNI: vpdpbusd multiplies 64 unsigned by 64 signed bytes and adds
// them in groups of four into sixteen int32 lanes, so two 32-weight blocks
// are one instruction (q4: the nibbles of four blocks are two). Below them,
// the integer GEMM of prompts with the same instruction.
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
#include "backend/cpu/simd_avx512_panels.h"

namespace slm::cpu {

namespace {

void quantize_x(const float* x, int64_t k, BlockQ8* out) {
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    __m256i values;
    out[b].scale = quantize_block(x + b * kQuantBlock, &values);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), values);
  }
}

// The dot products read x arranged once per product in two forms, one after
// the other. The q8 products read it per pair of blocks, so that one 512-bit
// vpdpbusd takes both: their 64 values, each block's scale spread over the 8
// lanes its sum lands in, and -128·Σx of each block in the first of those
// lanes, the start of the int32 sums that takes back out the 128 added to
// the weights to read them unsigned. An odd last block pairs with zeros.
struct ArrangedPair {
  int8_t q[64];
  float scale[16];
  int32_t minus_128_sum[16];
};

// The q4 products read it per four blocks, in the order a q4 block stores
// its levels: element j in the low nibble of byte j, element j + 16 in the
// high one. So the nibble bytes of four blocks, gathered into one register,
// are two vpdpbusd operands as they stand (low nibbles, then high), against
// `low` (x_0..15 of each block) and `high` (x_16..31); a block's sums land in
// 4 lanes, which hold its scale, and -8·Σx (q4 levels are w + 8) starts the
// first of them. Blocks past the end are zeros.
struct ArrangedQuad {
  int8_t low[64];
  int8_t high[64];
  float scale[16];
  int32_t minus_8_sum[16];
};

int64_t pairs_bytes(int64_t k) { return (k / kQuantBlock + 1) / 2 * static_cast<int64_t>(sizeof(ArrangedPair)); }

int64_t arranged_bytes(int64_t k) {
  return pairs_bytes(k) + (k / kQuantBlock + 3) / 4 * static_cast<int64_t>(sizeof(ArrangedQuad));
}

void arrange_x(const BlockQ8* x, int64_t k, void* out) {
  const int64_t blocks = k / kQuantBlock;
  auto* pairs = static_cast<ArrangedPair*>(out);
  auto* quads = reinterpret_cast<ArrangedQuad*>(static_cast<char*>(out) + pairs_bytes(k));
  std::memset(out, 0, static_cast<size_t>(arranged_bytes(k)));
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t sum = 0;
    for (int i = 0; i < kQuantBlock; ++i) sum += x[b].q[i];
    const float scale = f16_to_f32(x[b].scale);
    ArrangedPair& pair = pairs[b / 2];
    const int64_t half = b % 2;
    std::memcpy(pair.q + 32 * half, x[b].q, 32);
    std::fill_n(pair.scale + 8 * half, 8, scale);
    pair.minus_128_sum[8 * half] = -128 * sum;
    ArrangedQuad& quad = quads[b / 4];
    const int64_t quarter = b % 4;
    std::memcpy(quad.low + 16 * quarter, x[b].q, 16);
    std::memcpy(quad.high + 16 * quarter, x[b].q + 16, 16);
    std::fill_n(quad.scale + 4 * quarter, 4, scale);
    quad.minus_8_sum[4 * quarter] = -8 * sum;
  }
}

// Σ w·x of a q8 row, two blocks per step in two chains: the weights of a
// pair as unsigned bytes w + 128, their f16 scales widened together and
// spread over their lanes. Inlined into the loop over rows, whose constants
// are then loaded once.
[[gnu::always_inline]] inline float q8_row_dot(const ArrangedPair* x, const BlockQ8* w, int64_t blocks) {
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  auto step = [&](int64_t p, bool two, __m512& total) {
    const ArrangedPair& a = x[p];
    const BlockQ8* pair = w + 2 * p;
    const __m256i first = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair[0].q));
    const __m256i second = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair[1].q)) : _mm256_setzero_si256();
    const __m512i levels = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1),
                                            _mm512_set1_epi8(static_cast<char>(0x80)));
    const __m512i sum = _mm512_dpbusd_epi32(_mm512_loadu_si512(a.minus_128_sum), levels, _mm512_loadu_si512(a.q));
    const __m128i halves = _mm_insert_epi16(_mm_cvtsi32_si128(pair[0].scale), two ? pair[1].scale : 0, 1);
    const __m512 w_scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_cvtph_ps(halves)));
    total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(w_scale, _mm512_loadu_ps(a.scale)), total);
  };
  const int64_t full_pairs = blocks / 2;
  int64_t p = 0;
  for (; p + 2 <= full_pairs; p += 2) {
    prefetch_ahead<4 * sizeof(BlockQ8)>(w + 2 * p);
    step(p, true, acc[0]);
    step(p + 1, true, acc[1]);
  }
  if (p < full_pairs) step(p++, true, acc[0]);
  if (blocks % 2) step(p, false, acc[1]);
  return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
}

// Σ w·x of a q4 row, four blocks (72 bytes) per step in two chains. A block
// is 9 16-bit words, its scale first, so one word permute of two loads
// gathers the nibble bytes of four blocks and another their scales; the
// last step reads only the bytes of the blocks left.
[[gnu::always_inline]] inline float q4_row_dot(const ArrangedQuad* x, const BlockQ4* w, int64_t blocks) {
  constexpr int64_t kWords = sizeof(BlockQ4) / 2;
  static_assert(sizeof(BlockQ4) == 18, "a q4 block is its f16 scale and 16 bytes of nibbles");
  const auto* bytes = reinterpret_cast<const char*>(w);
  // Word i of the gathered nibbles is word 1 + i % 8 of block i / 8; words
  // 32 and up of the 72 bytes are the second load's first four.
  alignas(64) static const int16_t nibble_words[32] = {1,  2,  3,  4,  5,  6,  7,  8,  10, 11, 12,
                                                       13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24,
                                                       25, 26, 28, 29, 30, 31, 32, 33, 34, 35};
  const __m512i gather_nibbles = _mm512_load_si512(nibble_words);
  // Each block's scale four times, for the four lanes its sums land in.
  const __m512i spread_scales = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3 * kWords, 3 * kWords,
                                                 3 * kWords, 3 * kWords, 2 * kWords, 2 * kWords, 2 * kWords, 2 * kWords,
                                                 kWords, kWords, kWords, kWords, 0, 0, 0, 0);
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  auto step = [&](int64_t g, __m512i head, __m512i tail, __m512& total) {
    const ArrangedQuad& a = x[g];
    const __m512i nibbles = _mm512_permutex2var_epi16(head, gather_nibbles, tail);
    __m512i sum = _mm512_dpbusd_epi32(_mm512_loadu_si512(a.minus_8_sum), _mm512_and_si512(nibbles, low_nibbles),
                                      _mm512_loadu_si512(a.low));
    sum = _mm512_dpbusd_epi32(sum, _mm512_and_si512(_mm512_srli_epi16(nibbles, 4), low_nibbles),
                              _mm512_loadu_si512(a.high));
    const __m512 w_scale = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(spread_scales, head)));
    total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(w_scale, _mm512_loadu_ps(a.scale)), total);
  };
  auto full_step = [&](int64_t g, __m512& total) {
    const char* at = bytes + g * 4 * sizeof(BlockQ4);
    step(g, _mm512_loadu_si512(at), _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(at + 64))),
         total);
  };
  const int64_t full_groups = blocks / 4;
  int64_t g = 0;
  for (; g + 2 <= full_groups; g += 2) {
    const char* at = bytes + g * 4 * sizeof(BlockQ4);
    prefetch_ahead<8 * sizeof(BlockQ4)>(at);
    full_step(g, acc[0]);
    full_step(g + 1, acc[1]);
  }
  if (g < full_groups) full_step(g++, acc[0]);
  if (const int64_t left = blocks % 4) {
    const __mmask64 present = _cvtu64_mask64((uint64_t{1} << (left * sizeof(BlockQ4))) - 1);
    step(g, _mm512_maskz_loadu_epi8(present, bytes + g * 4 * sizeof(BlockQ4)), _mm512_setzero_si512(), acc[1]);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
}

void q8_rows(const void* arranged, const BlockQ8* w, int64_t k, int64_t rows, float* out) {
  const auto* x = static_cast<const ArrangedPair*>(arranged);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t r = 0; r < rows; ++r) out[r] = q8_row_dot(x, w + r * blocks, blocks);
}

void q4_rows(const void* arranged, const BlockQ4* w, int64_t k, int64_t rows, float* out) {
  const auto* x = reinterpret_cast<const ArrangedQuad*>(static_cast<const char*>(arranged) + pairs_bytes(k));
  const int64_t blocks = k / kQuantBlock;
  for (int64_t r = 0; r < rows; ++r) out[r] = q4_row_dot(x, w + r * blocks, blocks);
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
  return {quantize_x, arranged_bytes, arrange_x, q8_rows, q4_rows};
}

QuantGemmKernels avx512vnni_gemm_kernels() { return {prepare_x, gemm, nullptr, nullptr, nullptr}; }

}  // namespace slm::cpu
SLM_TARGET_END
#endif
