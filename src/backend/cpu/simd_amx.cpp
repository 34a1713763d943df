// Matrix products on the AMX tile units of Intel Xeons since Sapphire Rapids:
// one tdpbf16ps multiplies a 16×32 bf16 tile by a 32×16 one into 16×16 f32
// sums (16 K FLOP), one tdpbusd a 16×64 by a 64×16 byte tile (32 K
// operations), several times what the AVX-512 dot products of the same core
// do. The prompt's bf16 products (inference and training) and its q8/q4
// products run here where the CPU has the units and the kernel lets the
// process use them (simd.cpp asks); the rest of the amx path is avx512bf16's.
//
// Each kernel is a template over the tile operations it calls (amx_tiles.h):
// the instructions, or a plain C++ model of them that tests run on CPUs
// without AMX. Blocking, packing, edges and scaling are the same code either
// way; only the tile arithmetic differs.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <slm/error.h>

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

// Everything below, and nothing included above, is compiled for this target.
SLM_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,fma,f16c,amx-tile,amx-bf16,amx-int8")
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "backend/cpu/simd_avx512_inline.h"
#include "backend/cpu/simd_x86_inline.h"
#include "backend/cpu/simd_avx512_panels.h"
#include "backend/cpu/amx_tiles.h"

namespace slm::cpu {

namespace {

// Both GEMMs compute C in blocks of 32 rows × 32 columns: two A tiles (16
// rows each) against two B tiles (16 columns each) into four C tiles, four
// tile loads per four products. A block of 16 rows or fewer (the last of a
// prompt) uses one A tile.
constexpr int64_t kBlockRows = 32;
constexpr int64_t kPanelCols = 32;

// A block's 32×32 results as the tiles store them (row stride 128 bytes).
struct alignas(64) BlockOut {
  float c[kBlockRows][kPanelCols];
};

// Rows [m0, m0 + rows) of an operand whose tile loads read `row_bytes` from
// each row: read in place where the block is whole and inside the rows, else
// copied into a zeroed block of 32 rows (a tile always loads 16 rows, so
// the last block of a prompt is padded with zeros).
template <class T>
const T* block_rows(const T* a, int64_t lda, int64_t rows, int64_t row_values, bool in_place, std::vector<T>& staged) {
  if (in_place && rows == kBlockRows) return a;
  staged.assign(static_cast<size_t>(kBlockRows * row_values), T{});
  for (int64_t r = 0; r < rows; ++r) std::copy_n(a + r * lda, std::min(lda, row_values), staged.data() + r * row_values);
  return staged.data();
}

// ---- bf16: C (+)= A·B, A [M][lda] bf16, B a weight as Bf16Layout says ----

// Tiles of 16 rows × 32 bf16 (A), 16 pairs × 16 columns (B, a panel as
// pack_panel_* writes it, 32 columns wide, zero-padded to whole chunks of
// 32 along K) and 16 × 16 f32 (C).
constexpr TileShapes kBf16Shapes = {{16, 64}, {16, 64}, {16, 64}};
constexpr int64_t kChunk = 32;

template <class Tiles, int RowTiles>
void bf16_block(const uint16_t* a, int64_t lda, const uint32_t* panel, int64_t chunks, BlockOut& out) {
  constexpr int64_t kPanelStride = kPanelCols * sizeof(uint32_t);
  const int64_t a_stride = lda * static_cast<int64_t>(sizeof(uint16_t));
  Tiles::template zero_c<0, 0>();
  Tiles::template zero_c<0, 1>();
  if constexpr (RowTiles == 2) {
    Tiles::template zero_c<1, 0>();
    Tiles::template zero_c<1, 1>();
  }
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const uint32_t* b = panel + chunk * (kChunk / 2) * kPanelCols;
    Tiles::template load_b<0>(b, kPanelStride);
    Tiles::template load_b<1>(b + 16, kPanelStride);
    Tiles::template load_a<0>(a + chunk * kChunk, a_stride);
    Tiles::template dot_bf16<0, 0>();
    Tiles::template dot_bf16<0, 1>();
    if constexpr (RowTiles == 2) {
      Tiles::template load_a<1>(a + 16 * lda + chunk * kChunk, a_stride);
      Tiles::template dot_bf16<1, 0>();
      Tiles::template dot_bf16<1, 1>();
    }
  }
  constexpr int64_t kOutStride = kPanelCols * sizeof(float);
  Tiles::template store_c<0, 0>(out.c[0], kOutStride);
  Tiles::template store_c<0, 1>(out.c[0] + 16, kOutStride);
  if constexpr (RowTiles == 2) {
    Tiles::template store_c<1, 0>(out.c[16], kOutStride);
    Tiles::template store_c<1, 1>(out.c[16] + 16, kOutStride);
  }
}

// Writes rows × cols of a block's results into C (added with `accumulate`).
void write_block(const BlockOut& out, int64_t rows, int64_t cols, float* C, int64_t ldc, bool accumulate) {
  const __mmask16 masks[2] = {lane_mask(cols), lane_mask(cols - 16)};
  for (int64_t r = 0; r < rows; ++r) {
    for (int v = 0; v < 2; ++v) {
      float* c = C + r * ldc + 16 * v;
      __m512 value = _mm512_load_ps(out.c[r] + 16 * v);
      if (accumulate) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(masks[v], c));
      _mm512_mask_storeu_ps(c, masks[v], value);
    }
  }
}

template <class Tiles>
void bf16_gemm(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t ldb, Bf16Layout layout, int64_t N,
               int64_t K, float* C, int64_t ldc, bool accumulate) {
  const int64_t chunks = (K + kChunk - 1) / kChunk;
  const int64_t padded_pairs = chunks * kChunk / 2;
  const int64_t panels = (N + kPanelCols - 1) / kPanelCols;
  thread_local std::vector<uint32_t> packed;
  thread_local std::vector<uint16_t> staged;
  packed.resize(static_cast<size_t>(panels * padded_pairs * kPanelCols));
  for (int64_t p = 0; p < panels; ++p) {
    uint32_t* panel = packed.data() + p * padded_pairs * kPanelCols;
    const int64_t cols = std::min(kPanelCols, N - p * kPanelCols);
    if (layout == Bf16Layout::NK) {
      pack_panel_nk<kPanelCols>(B + p * kPanelCols * ldb, ldb, K, cols, panel);
    } else {
      pack_panel_kn<kPanelCols>(B + p * kPanelCols, ldb, K, cols, panel);
    }
    std::fill(panel + (K + 1) / 2 * kPanelCols, panel + padded_pairs * kPanelCols, 0u);
  }
  // In place, a tile row reads 32 values from each chunk: inside the row
  // when K is whole chunks (A is zero from K to lda, so no more is needed).
  const bool in_place = K % kChunk == 0;
  const int64_t row_values = chunks * kChunk;
  Tiles::configure(kBf16Shapes);
  BlockOut out;
  for (int64_t m0 = 0; m0 < M; m0 += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, M - m0);
    const uint16_t* a = block_rows(A + m0 * lda, lda, rows, row_values, in_place, staged);
    const int64_t a_ld = a == A + m0 * lda ? lda : row_values;
    for (int64_t p = 0; p < panels; ++p) {
      const uint32_t* panel = packed.data() + p * padded_pairs * kPanelCols;
      if (rows > 16) {
        bf16_block<Tiles, 2>(a, a_ld, panel, chunks, out);
      } else {
        bf16_block<Tiles, 1>(a, a_ld, panel, chunks, out);
      }
      write_block(out, rows, std::min(kPanelCols, N - p * kPanelCols), C + m0 * ldc + p * kPanelCols, ldc, accumulate);
    }
  }
  Tiles::release();
}

// ---- int8: the q8/q4 products of prompts (QuantGemmKernels) ----

// Every block of 32 has its own scales, so each is one tile product of its
// own: A 16 rows × 32 bytes (x + 128), B 8 quads × 16 columns (a
// PackedPanel<2>'s block), C 16 × 16 int32, stored and scaled into f32
// totals with the AVX-512 units before the next block.
constexpr TileShapes kInt8Shapes = {{16, 64}, {16, 32}, {8, 64}};

template <class Tiles, int RowTiles>
void int8_block(const uint8_t* xq, int64_t k, PackedPanel<2>& panel, int64_t b, BlockOut& sums) {
  const int64_t column_stride = 16 * sizeof(int32_t);
  Tiles::template zero_c<0, 0>();
  Tiles::template zero_c<0, 1>();
  Tiles::template load_b<0>(panel.weights(b, 0, 0), column_stride);
  Tiles::template load_b<1>(panel.weights(b, 1, 0), column_stride);
  Tiles::template load_a<0>(xq + b * kQuantBlock, k);
  Tiles::template dot_u8s8<0, 0>();
  Tiles::template dot_u8s8<0, 1>();
  if constexpr (RowTiles == 2) {
    Tiles::template zero_c<1, 0>();
    Tiles::template zero_c<1, 1>();
    Tiles::template load_a<1>(xq + 16 * k + b * kQuantBlock, k);
    Tiles::template dot_u8s8<1, 0>();
    Tiles::template dot_u8s8<1, 1>();
  }
  constexpr int64_t kOutStride = kPanelCols * sizeof(float);
  Tiles::template store_c<0, 0>(sums.c[0], kOutStride);
  Tiles::template store_c<0, 1>(sums.c[0] + 16, kOutStride);
  if constexpr (RowTiles == 2) {
    Tiles::template store_c<1, 0>(sums.c[16], kOutStride);
    Tiles::template store_c<1, 1>(sums.c[16] + 16, kOutStride);
  }
}

template <class Tiles, class Block>
void int8_gemm(const uint8_t* xq, const float* xs, int64_t m, const Block* w, int64_t n, int64_t k, float* c,
               int64_t ldc) {
  const int64_t blocks = k / kQuantBlock;
  thread_local PackedPanel<2> panel;
  thread_local std::vector<uint8_t> staged_q;
  thread_local std::vector<float> staged_scales;
  Tiles::configure(kInt8Shapes);
  BlockOut sums, totals;
  for (int64_t n0 = 0; n0 < n; n0 += kPanelCols) {
    const int64_t cols = std::min(kPanelCols, n - n0);
    pack_panel(w + n0 * blocks, blocks, cols, panel);
    for (int64_t m0 = 0; m0 < m; m0 += kBlockRows) {
      const int64_t rows = std::min(kBlockRows, m - m0);
      const uint8_t* q = block_rows(xq + m0 * k, k, rows, k, true, staged_q);
      const float* scales = block_rows(xs + m0 * blocks, blocks, rows, blocks, true, staged_scales);
      std::memset(&totals, 0, sizeof totals);
      for (int64_t b = 0; b < blocks; ++b) {
        if (rows > 16) {
          int8_block<Tiles, 2>(q, k, panel, b, sums);
        } else {
          int8_block<Tiles, 1>(q, k, panel, b, sums);
        }
        const int64_t scaled_rows = rows > 16 ? kBlockRows : 16;
        for (int v = 0; v < 2; ++v) {
          const __m512i offset = _mm512_load_si512(panel.offsets(b, v));
          const __m512 w_scale = _mm512_load_ps(panel.scales(b, v));
          for (int64_t r = 0; r < scaled_rows; ++r) {
            const __m512i sum = _mm512_add_epi32(_mm512_load_si512(sums.c[r] + 16 * v), offset);
            const __m512 scale = _mm512_mul_ps(w_scale, _mm512_set1_ps(scales[r * blocks + b]));
            float* total = totals.c[r] + 16 * v;
            _mm512_store_ps(total, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, _mm512_load_ps(total)));
          }
        }
      }
      write_block(totals, rows, cols, c + m0 * ldc + n0, ldc, false);
    }
  }
  Tiles::release();
}

template <class Tiles>
void quant_gemm(const uint8_t* xq, const float* xs, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
                float* c, int64_t ldc) {
  if (dtype == DType::Q8) {
    int8_gemm<Tiles>(xq, xs, m, static_cast<const BlockQ8*>(w), n, k, c, ldc);
  } else {
    int8_gemm<Tiles>(xq, xs, m, static_cast<const BlockQ4*>(w), n, k, c, ldc);
  }
}

}  // namespace

// narrow() is avx512bf16's: the amx path rounds activations as that one does.
Bf16GemmKernels amx_bf16_kernels() { return {bf16_gemm<AmxTiles>, avx512bf16_kernels().narrow}; }
QuantGemmKernels amx_quant_kernels() { return {prepare_x, quant_gemm<AmxTiles>}; }
Bf16GemmKernels amx_model_bf16_kernels() { return {bf16_gemm<AmxTileModel>, avx512bf16_kernels().narrow}; }
QuantGemmKernels amx_model_quant_kernels() { return {prepare_x, quant_gemm<AmxTileModel>}; }

// The probe's peaks: four independent tile products per iteration on
// operands that stay in the tile registers (C 0..3 from A 4/5 and B 6/7).
double amx_bf16_loop(int64_t iterations) {
  AmxTiles::configure(kBf16Shapes);
  alignas(64) static const uint16_t zeros[16][32] = {};
  AmxTiles::load_a<0>(zeros, 64);
  AmxTiles::load_a<1>(zeros, 64);
  AmxTiles::load_b<0>(zeros, 64);
  AmxTiles::load_b<1>(zeros, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    AmxTiles::dot_bf16<0, 0>();
    AmxTiles::dot_bf16<0, 1>();
    AmxTiles::dot_bf16<1, 0>();
    AmxTiles::dot_bf16<1, 1>();
  }
  alignas(64) float out[16][16];
  AmxTiles::store_c<0, 0>(out, 64);
  AmxTiles::release();
  return out[0][0];
}

double amx_int8_loop(int64_t iterations) {
  constexpr TileShapes kFullTiles = {{16, 64}, {16, 64}, {16, 64}};
  AmxTiles::configure(kFullTiles);
  alignas(64) static const uint8_t zeros[16][64] = {};
  AmxTiles::load_a<0>(zeros, 64);
  AmxTiles::load_a<1>(zeros, 64);
  AmxTiles::load_b<0>(zeros, 64);
  AmxTiles::load_b<1>(zeros, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    AmxTiles::dot_u8s8<0, 0>();
    AmxTiles::dot_u8s8<0, 1>();
    AmxTiles::dot_u8s8<1, 0>();
    AmxTiles::dot_u8s8<1, 1>();
  }
  alignas(64) int32_t out[16][16];
  AmxTiles::store_c<0, 0>(out, 64);
  AmxTiles::release();
  return out[0][0];
}

}  // namespace slm::cpu
SLM_TARGET_END
#endif
