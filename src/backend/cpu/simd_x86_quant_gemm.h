// The integer GEMM of q8/q4 prompts on 256-bit registers (the avx2vnni and
// avx2 paths): weights packed per panel of 16 columns, activations
// broadcast a word (four values) at a time, a tile of 3 rows × 16 columns.
// Each path supplies the Step that multiplies a quad into a block's sums:
// vpdpbusd with AVX-VNNI; vpmaddubsw on AVX2 (q4 products summed in int16
// over a block, q8 ones widened at each quad). Include it after the file's
// `#pragma GCC target`, as simd_x86_inline.h; its includers name
// <algorithm>, <cstring> and <vector> above the pragma.
#pragma once

#include "backend/cpu/simd_x86_inline.h"

namespace slm::cpu {
namespace {

// A tile of 3 rows × 16 columns (two vectors) holds six sums of the block
// in progress and six f32 totals; per quad of k it loads two weight vectors
// and broadcasts three activation words for six steps: 15 of the 16
// registers (the AVX2 step takes the 16th for its product).
constexpr int64_t kRows = 3;
constexpr int64_t kVectors = 2;
constexpr int64_t kCols = 8 * kVectors;
constexpr int64_t kQuads = kQuantBlock / 4;

// A panel's packed weights, for `blocks` blocks: per block and vector, its
// quads as [quad][8 columns][4 bytes], then the columns' f32 scales and
// int32 offsets; 32-byte aligned.
class Panel {
 public:
  void reserve(int64_t blocks) {
    const size_t words = static_cast<size_t>(blocks * kVectors * (kQuads + 2) * 8) + 8;
    if (storage_.size() < words) storage_.resize(words);
    const uintptr_t address = reinterpret_cast<uintptr_t>(storage_.data());
    words_ = storage_.data() + (32 - address % 32) % 32 / sizeof(int32_t);
  }
  int32_t* weights(int64_t b, int64_t v, int64_t q) { return words_ + ((b * kVectors + v) * (kQuads + 2) + q) * 8; }
  float* scales(int64_t b, int64_t v) { return reinterpret_cast<float*>(weights(b, v, kQuads)); }
  int32_t* offsets(int64_t b, int64_t v) { return weights(b, v, kQuads + 1); }

 private:
  std::vector<int32_t> storage_;
  int32_t* words_ = nullptr;
};

// Transposes 8×8 32-bit words: r[i] holds row i, and on return r[j] holds
// column j (pairs and quads within 128-bit lanes, then the lanes).
void transpose_8x8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
    r[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
  }
}

// Packs weight rows [0, cols) (cols ≤ kCols) of w (rows of `blocks`
// blocks): a block of 8 rows is one 8×8 transpose of 32-bit words, row i's
// eight words becoming word i of eight vectors, one per quad. A column's
// offset, -128·Σw, takes back out the 128 added to x to read it unsigned.
template <class Block>
void pack_panel(const Block* w, int64_t blocks, int64_t cols, Panel& panel) {
  panel.reserve(blocks);
  const __m256i ones = _mm256_set1_epi8(1);
  for (int64_t v = 0; v < kVectors; ++v) {
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i r[8];
      for (int64_t i = 0; i < 8; ++i) {
        const int64_t col = 8 * v + i;
        r[i] = col < cols ? block_values(w[col * blocks + b]) : _mm256_setzero_si256();
      }
      transpose_8x8(r);
      __m256i sum = _mm256_setzero_si256();
      for (int64_t q = 0; q < kQuads; ++q) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(panel.weights(b, v, q)), r[q]);
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(ones, r[q]), _mm256_set1_epi16(1)));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(panel.offsets(b, v)),
                         _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
      float* scales = panel.scales(b, v);
      for (int64_t i = 0; i < 8; ++i) scales[i] = 8 * v + i < cols ? scale_of(w[(8 * v + i) * blocks + b].scale) : 0.0f;
    }
  }
}

// A Step has a type Sum, the sums of a block in progress for 8 columns;
// start(offset) begins them, add(sum, x, w) adds the products of a quad of
// x (four unsigned bytes in every lane) with w's, and finish(sum, offsets)
// returns them as int32 sums that include the columns' offsets (one of
// start and finish adds them, unless add takes the 128 off x itself).
template <class Step, int MR>
void gemm_tile(const uint8_t* xq, int64_t k, const float* xs, Panel& panel, int64_t blocks, float* c, int64_t ldc,
               const __m256i* masks) {
  __m256 total[MR][kVectors];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kVectors; ++v) total[i][v] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; ++b) {
    typename Step::Sum sum[MR][kVectors];
    for (int v = 0; v < kVectors; ++v) {
      const __m256i offset = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel.offsets(b, v)));
      for (int i = 0; i < MR; ++i) sum[i][v] = Step::start(offset);
    }
    for (int64_t q = 0; q < kQuads; ++q) {
      __m256i w[kVectors];
      for (int v = 0; v < kVectors; ++v) w[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel.weights(b, v, q)));
      for (int i = 0; i < MR; ++i) {
        int32_t word;
        std::memcpy(&word, xq + i * k + b * kQuantBlock + 4 * q, sizeof word);
        const __m256i x = _mm256_set1_epi32(word);
        for (int v = 0; v < kVectors; ++v) sum[i][v] = Step::add(sum[i][v], x, w[v]);
      }
    }
    __m256 scale[kVectors];
    for (int v = 0; v < kVectors; ++v) scale[v] = _mm256_load_ps(panel.scales(b, v));
    for (int i = 0; i < MR; ++i) {
      const __m256 x_scale = _mm256_set1_ps(xs[i * blocks + b]);
      for (int v = 0; v < kVectors; ++v) {
        const __m256i integers = Step::finish(sum[i][v], panel.offsets(b, v));
        total[i][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(integers), _mm256_mul_ps(scale[v], x_scale), total[i][v]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kVectors; ++v) _mm256_maskstore_ps(c + i * ldc + 8 * v, masks[v], total[i][v]);
  }
}


// quantize_q8's blocks, through the avx2 path's quantize_x (bit-identical to
// it), as the GEMM reads them: values plus 128, scales widened.
void prepare_x(const float* x, int64_t k, uint8_t* q, float* scales) {
  thread_local std::vector<BlockQ8> blocks;
  blocks.resize(static_cast<size_t>(k / kQuantBlock));
  avx2_quant_kernels().quantize_x(x, k, blocks.data());
  const __m256i offset = _mm256_set1_epi8(static_cast<char>(0x80));
  for (size_t b = 0; b < blocks.size(); ++b) {
    scales[b] = scale_of(blocks[b].scale);
    const __m256i values = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks[b].q));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQuantBlock), _mm256_xor_si256(values, offset));
  }
}

template <class Step, class Block>
void gemm_of(const uint8_t* xq, const float* xs, int64_t m, const Block* w, int64_t n, int64_t k, float* c,
             int64_t ldc) {
  using GemmTile = void (*)(const uint8_t*, int64_t, const float*, Panel&, int64_t, float*, int64_t, const __m256i*);
  static constexpr GemmTile kGemmTiles[kRows] = {gemm_tile<Step, 1>, gemm_tile<Step, 2>, gemm_tile<Step, 3>};
  const int64_t blocks = k / kQuantBlock;
  thread_local Panel panel;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t n0 = 0; n0 < n; n0 += kCols) {
    const int64_t cols = std::min(kCols, n - n0);
    pack_panel(w + n0 * blocks, blocks, cols, panel);
    __m256i masks[kVectors];
    for (int64_t v = 0; v < kVectors; ++v) {
      masks[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols - 8 * v)), lanes);
    }
    for (int64_t m0 = 0; m0 < m; m0 += kRows) {
      const int64_t rows = std::min(kRows, m - m0);
      kGemmTiles[rows - 1](xq + m0 * k, k, xs + m0 * blocks, panel, blocks, c + m0 * ldc + n0, ldc, masks);
    }
  }
}

// QuantGemmKernels::gemm of a path: q8 weights through Q8Step, q4 ones
// through Q4Step.
template <class Q8Step, class Q4Step>
void gemm_of_dtype(const uint8_t* xq, const float* xs, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
                   float* c, int64_t ldc) {
  if (dtype == DType::Q8) {
    gemm_of<Q8Step>(xq, xs, m, static_cast<const BlockQ8*>(w), n, k, c, ldc);
  } else {
    gemm_of<Q4Step>(xq, xs, m, static_cast<const BlockQ4*>(w), n, k, c, ldc);
  }
}

}  // namespace
}  // namespace slm::cpu
