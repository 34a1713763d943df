// Matrix products on the AMX tile units of Intel Xeons since Sapphire Rapids:
// one tdpbf16ps multiplies a 16×32 bf16 tile by a 32×16 one into 16×16 f32
// sums (16 K FLOP), one tdpbssd a 16×64 by a 64×16 byte tile (32 K
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
#include <type_traits>
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

// Every product computes C in blocks of 32 × 32: two A tiles (16 rows
// each) against two B tiles (16 columns each) into four C tiles, four tile
// loads per four products (transposed products: 32 weight rows against 32
// activation rows). A block edge of 16 or fewer uses one tile of that side.
constexpr int64_t kBlockRows = 32;
constexpr int64_t kPanelCols = 32;

// A block's 32×32 results as the tiles store them (row stride 128 bytes).
struct alignas(64) BlockOut {
  float c[kBlockRows][kPanelCols];
};

// ---- bf16: C (+)= A·B, A [M][lda] bf16, B a weight as Bf16Layout says ----

// All tiles 16 rows × 64 bytes: the bf16 products' shapes (32 values along
// K per product, a chunk), and the probe's.
constexpr TileShapes kFullTiles = {{16, 64}, {16, 64}, {16, 64}};
constexpr int64_t kChunk = 32;
constexpr int64_t kTileBytes = 16 * 64;

int64_t chunks_of(int64_t K) { return (K + kChunk - 1) / kChunk; }

// NK products run transposed, Cᵀ = B·Aᵀ: a weight's rows are A tiles as
// they lie in memory (16 rows, 32 values of each), and the activations are
// the B tiles, packed once per product: per 16 rows of A and chunk of K, a
// 16×16 transpose of 32-bit pairs (tile row p holds A[m][2p], A[m][2p+1] of
// each of the 16 rows m), zero past M and past K.
int64_t packed_a_bytes(int64_t M, int64_t K) { return (M + 15) / 16 * chunks_of(K) * kTileBytes; }

void pack_a(const uint16_t* A, int64_t M, int64_t lda, int64_t K, void* packed) {
  const int64_t chunks = chunks_of(K);
  auto* out = static_cast<char*>(packed);
  for (int64_t r0 = 0; r0 < M; r0 += 16) {
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      // A is zero from K to lda; past lda nothing is read.
      const __mmask16 present = lane_mask(lda / 2 - chunk * 16);
      __m512i rows[16];
      for (int64_t i = 0; i < 16; ++i) {
        rows[i] = r0 + i < M ? _mm512_maskz_loadu_epi32(present, A + (r0 + i) * lda + chunk * kChunk) : _mm512_setzero_si512();
      }
      transpose_16x16(rows);
      char* tile = out + (r0 / 16 * chunks + chunk) * kTileBytes;
      for (int p = 0; p < 16; ++p) _mm512_storeu_si512(tile + 64 * p, rows[p]);
    }
  }
}

// Cᵀ for 16·WeightTiles weight rows × 16·RowTiles activation rows: A tiles
// from the weight rows (stride w_stride bytes), B tiles from the packed
// activations (row blocks `x` and `x + chunks` tiles). out.c[16 I + n][16 J
// + m] is C[m][n] of weight tile I and row tile J.
template <class Tiles, int WeightTiles, int RowTiles>
void bf16_block(const uint16_t* w, int64_t w_stride, const char* x, int64_t chunks, BlockOut& out) {
  Tiles::template zero_c<0, 0>();
  if constexpr (RowTiles == 2) Tiles::template zero_c<0, 1>();
  if constexpr (WeightTiles == 2) Tiles::template zero_c<1, 0>();
  if constexpr (WeightTiles == 2 && RowTiles == 2) Tiles::template zero_c<1, 1>();
  const int64_t w_values = w_stride / static_cast<int64_t>(sizeof(uint16_t));
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    Tiles::template load_b<0>(x + chunk * kTileBytes, 64);
    Tiles::template load_a<0>(w + chunk * kChunk, w_stride);
    Tiles::template dot_bf16<0, 0>();
    if constexpr (RowTiles == 2) {
      Tiles::template load_b<1>(x + (chunks + chunk) * kTileBytes, 64);
      Tiles::template dot_bf16<0, 1>();
    }
    if constexpr (WeightTiles == 2) {
      Tiles::template load_a<1>(w + 16 * w_values + chunk * kChunk, w_stride);
      Tiles::template dot_bf16<1, 0>();
      if constexpr (RowTiles == 2) Tiles::template dot_bf16<1, 1>();
    }
  }
  constexpr int64_t kOutStride = kPanelCols * sizeof(float);
  Tiles::template store_c<0, 0>(out.c[0], kOutStride);
  if constexpr (RowTiles == 2) Tiles::template store_c<0, 1>(out.c[0] + 16, kOutStride);
  if constexpr (WeightTiles == 2) Tiles::template store_c<1, 0>(out.c[16], kOutStride);
  if constexpr (WeightTiles == 2 && RowTiles == 2) Tiles::template store_c<1, 1>(out.c[16] + 16, kOutStride);
}

// Writes a block's results into C (rows × cols of it; added with
// `accumulate`). Transposed: out.c holds Cᵀ, a 16×16 transpose per tile.
void write_block(const BlockOut& out, int64_t rows, int64_t cols, float* C, int64_t ldc, bool accumulate,
                 bool transposed) {
  for (int64_t i = 0; i < 2 && 16 * i < rows; ++i) {
    for (int64_t j = 0; j < 2 && 16 * j < cols; ++j) {
      __m512i tile[16];
      for (int64_t r = 0; r < 16; ++r) {
        tile[r] = transposed ? _mm512_load_si512(out.c[16 * j + r] + 16 * i) : _mm512_load_si512(out.c[16 * i + r] + 16 * j);
      }
      if (transposed) transpose_16x16(tile);
      const __mmask16 mask = lane_mask(cols - 16 * j);
      for (int64_t r = 0; r < 16 && 16 * i + r < rows; ++r) {
        float* c = C + (16 * i + r) * ldc + 16 * j;
        __m512 value = _mm512_castsi512_ps(tile[r]);
        if (accumulate) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, c));
        _mm512_mask_storeu_ps(c, mask, value);
      }
    }
  }
}

template <class Tiles>
void bf16_gemm_packed(const void* packed, int64_t m0, int64_t M, const uint16_t* B, int64_t ldb, int64_t N, int64_t K,
                      float* C, int64_t ldc, bool accumulate) {
  const int64_t chunks = chunks_of(K);
  const char* x = static_cast<const char*>(packed) + m0 / 16 * chunks * kTileBytes;
  // A tile reads 32 values of each chunk from 16 weight rows: in place where
  // those lie inside the weight (K whole chunks, all 32 rows of the block
  // there), else from rows copied into zeros.
  thread_local std::vector<uint16_t> staged;
  Tiles::configure(kFullTiles);
  BlockOut out;
  for (int64_t n0 = 0; n0 < N; n0 += kPanelCols) {
    const int64_t cols = std::min(kPanelCols, N - n0);
    const uint16_t* w = B + n0 * ldb;
    int64_t w_stride = ldb * static_cast<int64_t>(sizeof(uint16_t));
    if (K % kChunk != 0 || cols < kPanelCols) {
      const int64_t row_values = chunks * kChunk;
      staged.assign(static_cast<size_t>(kPanelCols * row_values), 0);
      for (int64_t r = 0; r < cols; ++r) std::copy_n(B + (n0 + r) * ldb, K, staged.data() + r * row_values);
      w = staged.data();
      w_stride = row_values * static_cast<int64_t>(sizeof(uint16_t));
    }
    for (int64_t r0 = 0; r0 < M; r0 += kBlockRows) {
      const int64_t rows = std::min(kBlockRows, M - r0);
      const char* x_rows = x + r0 / 16 * chunks * kTileBytes;
      if (cols > 16) {
        if (rows > 16) {
          bf16_block<Tiles, 2, 2>(w, w_stride, x_rows, chunks, out);
        } else {
          bf16_block<Tiles, 2, 1>(w, w_stride, x_rows, chunks, out);
        }
      } else if (rows > 16) {
        bf16_block<Tiles, 1, 2>(w, w_stride, x_rows, chunks, out);
      } else {
        bf16_block<Tiles, 1, 1>(w, w_stride, x_rows, chunks, out);
      }
      write_block(out, rows, cols, C + r0 * ldc + n0, ldc, accumulate, true);
    }
  }
  Tiles::release();
}

// KN products (the input gradient dy·W) run as they are: A tiles from A's
// rows, B tiles from 32-column panels of the weight interleaved in pairs
// (pack_panel_kn), zero-padded to whole chunks.
template <class Tiles, int RowTiles>
void bf16_block_kn(const uint16_t* a, int64_t lda, const uint32_t* panel, int64_t chunks, BlockOut& out) {
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

// 32 rows of A (`rows` of them real, row stride lda) as tile loads read
// them, `row_values` from each: in place where all 32 exist and `in_place`
// says the reads stay inside each row, else copied into a zeroed block (a
// tile always loads 16 rows, so the last block of a prompt is padded).
const uint16_t* block_rows(const uint16_t* a, int64_t lda, int64_t rows, int64_t row_values, bool in_place,
                           std::vector<uint16_t>& staged) {
  if (in_place && rows == kBlockRows) return a;
  staged.assign(static_cast<size_t>(kBlockRows * row_values), 0);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(a + r * lda, std::min(lda, row_values), staged.data() + r * row_values);
  return staged.data();
}

template <class Tiles>
void bf16_gemm_kn(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t ldb, int64_t N, int64_t K,
                  float* C, int64_t ldc, bool accumulate) {
  const int64_t chunks = chunks_of(K);
  const int64_t padded_pairs = chunks * kChunk / 2;
  thread_local std::vector<uint32_t> panel;
  thread_local std::vector<uint16_t> staged;
  panel.resize(static_cast<size_t>(padded_pairs * kPanelCols));
  // In place, a tile row reads 32 values of each chunk: inside the row when
  // K is whole chunks (A is zero from K to lda).
  const bool in_place = K % kChunk == 0;
  Tiles::configure(kFullTiles);
  BlockOut out;
  for (int64_t n0 = 0; n0 < N; n0 += kPanelCols) {
    const int64_t cols = std::min(kPanelCols, N - n0);
    pack_panel_kn<kPanelCols>(B + n0, ldb, K, cols, panel.data());
    std::fill(panel.begin() + (K + 1) / 2 * kPanelCols, panel.end(), 0u);
    for (int64_t m0 = 0; m0 < M; m0 += kBlockRows) {
      const int64_t rows = std::min(kBlockRows, M - m0);
      const uint16_t* a = block_rows(A + m0 * lda, lda, rows, chunks * kChunk, in_place, staged);
      const int64_t a_ld = a == A + m0 * lda ? lda : chunks * kChunk;
      if (rows > 16) {
        bf16_block_kn<Tiles, 2>(a, a_ld, panel.data(), chunks, out);
      } else {
        bf16_block_kn<Tiles, 1>(a, a_ld, panel.data(), chunks, out);
      }
      write_block(out, rows, cols, C + m0 * ldc + n0, ldc, accumulate, false);
    }
  }
  Tiles::release();
}

template <class Tiles>
void bf16_gemm(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t ldb, Bf16Layout layout, int64_t N,
               int64_t K, float* C, int64_t ldc, bool accumulate) {
  if (layout == Bf16Layout::KN) {
    bf16_gemm_kn<Tiles>(A, M, lda, B, ldb, N, K, C, ldc, accumulate);
    return;
  }
  thread_local std::vector<char> packed;
  packed.resize(static_cast<size_t>(packed_a_bytes(M, K)));
  pack_a(A, M, lda, K, packed.data());
  bf16_gemm_packed<Tiles>(packed.data(), 0, M, B, ldb, N, K, C, ldc, accumulate);
}

// ---- int8: the q8/q4 products of prompts (QuantGemmKernels) ----

// Run transposed as the bf16 NK products: weight rows are A tiles (signed
// bytes, q4 levels less 8), the prepared activations B tiles packed once per
// product, and tdpbssd multiplies signed by signed, so x needs no offset.
// Every block of 32 has its own scales, so each is one tile product of its
// own (A 16 rows × 32 bytes, B 8 quads × 16 rows, C 16 × 16 int32), stored
// and scaled into f32 totals with the AVX-512 units before the next block.
constexpr TileShapes kInt8Shapes = {{16, 64}, {16, 32}, {8, 64}};
constexpr int64_t kQuadTileBytes = kQuads * 64;

// Per 16 prepared rows: per block, its B tile ([quad][16 rows][4 bytes],
// q8 values as signed bytes), then per block the 16 rows' scales; rows past
// m are zeros.
int64_t packed_x_bytes(int64_t m, int64_t k) {
  return (m + 15) / 16 * (k / kQuantBlock) * (kQuadTileBytes + 16 * static_cast<int64_t>(sizeof(float)));
}

void pack_x(const uint8_t* xq, const float* xs, int64_t m, int64_t k, void* packed) {
  const int64_t blocks = k / kQuantBlock;
  const int64_t block_bytes = packed_x_bytes(16, k);
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t r0 = 0; r0 < m; r0 += 16) {
    char* out = static_cast<char*>(packed) + r0 / 16 * block_bytes;
    auto* scales = reinterpret_cast<float*>(out + blocks * kQuadTileBytes);
    // Two blocks of 16 rows are one 16×16 transpose of 32-bit words.
    for (int64_t b = 0; b < blocks; b += 2) {
      const bool pair = b + 1 < blocks;
      const __mmask16 present = pair ? 0xffff : 0x00ff;
      __m512i rows[16];
      for (int64_t i = 0; i < 16; ++i) {
        rows[i] = r0 + i < m ? _mm512_xor_si512(_mm512_maskz_loadu_epi32(present, xq + (r0 + i) * k + b * kQuantBlock), offset)
                             : _mm512_setzero_si512();
      }
      transpose_16x16(rows);
      for (int64_t half = 0; half < (pair ? 2 : 1); ++half) {
        for (int64_t q = 0; q < kQuads; ++q) {
          _mm512_storeu_si512(out + (b + half) * kQuadTileBytes + 64 * q, rows[half * kQuads + q]);
        }
      }
    }
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t i = 0; i < 16; ++i) scales[b * 16 + i] = r0 + i < m ? xs[(r0 + i) * blocks + b] : 0.0f;
    }
  }
}

// 32 weight rows from n0 as A tiles read them, and their scales as f32
// ([row][block]): q8 rows in place where all 32 exist, else (and q4 rows
// always: their levels, less 8) copied into bytes [32][k], zero past n.
struct WeightRows {
  const int8_t* values;  // block 0 of the first row
  int64_t stride;        // bytes from a row's block to the next row's
  int64_t block_bytes;   // from a block to the next of its row
  const float* scales;
};

template <class Block>
WeightRows weight_rows(const Block* w, int64_t n0, int64_t n, int64_t k, std::vector<int8_t>& staged,
                              std::vector<float>& scales) {
  const int64_t blocks = k / kQuantBlock;
  const int64_t rows = std::min(kPanelCols, n - n0);
  scales.assign(static_cast<size_t>(kPanelCols * blocks), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) scales[r * blocks + b] = scale_of(w[(n0 + r) * blocks + b].scale);
  }
  if constexpr (std::is_same_v<Block, BlockQ8>) {
    constexpr int64_t kBytes = sizeof(BlockQ8);
    if (rows == kPanelCols) return {w[n0 * blocks].q, blocks * kBytes, kBytes, scales.data()};
  }
  staged.assign(static_cast<size_t>(kPanelCols * k), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(staged.data() + r * k + b * kQuantBlock),
                          block_values(w[(n0 + r) * blocks + b]));
    }
  }
  return {staged.data(), k, kQuantBlock, scales.data()};
}

// One block's products for 16·WeightTiles weight rows × 16·RowTiles
// activation rows: sums.c[16 I + n][16 J + m] (int32) for weight tile I and
// row tile J. `values` is block b of the first weight row (the next rows
// `stride` bytes apart), `x` the first row tile's B tile of block b (the
// next row tile's `x_next` bytes on).
template <class Tiles, int WeightTiles, int RowTiles>
void int8_block(const int8_t* values, int64_t stride, const char* x, int64_t x_next, BlockOut& sums) {
  Tiles::template zero_c<0, 0>();
  Tiles::template load_a<0>(values, stride);
  Tiles::template load_b<0>(x, 64);
  Tiles::template dot_s8s8<0, 0>();
  if constexpr (RowTiles == 2) {
    Tiles::template zero_c<0, 1>();
    Tiles::template load_b<1>(x + x_next, 64);
    Tiles::template dot_s8s8<0, 1>();
  }
  if constexpr (WeightTiles == 2) {
    Tiles::template zero_c<1, 0>();
    Tiles::template load_a<1>(values + 16 * stride, stride);
    Tiles::template dot_s8s8<1, 0>();
    if constexpr (RowTiles == 2) {
      Tiles::template zero_c<1, 1>();
      Tiles::template dot_s8s8<1, 1>();
    }
  }
  constexpr int64_t kOutStride = kPanelCols * sizeof(int32_t);
  Tiles::template store_c<0, 0>(sums.c[0], kOutStride);
  if constexpr (RowTiles == 2) Tiles::template store_c<0, 1>(sums.c[0] + 16, kOutStride);
  if constexpr (WeightTiles == 2) Tiles::template store_c<1, 0>(sums.c[16], kOutStride);
  if constexpr (WeightTiles == 2 && RowTiles == 2) Tiles::template store_c<1, 1>(sums.c[16] + 16, kOutStride);
}

template <class Tiles, int WeightTiles, int RowTiles>
void int8_rows(const WeightRows& weights, const char* x, int64_t blocks, BlockOut& sums, BlockOut& totals) {
  const int64_t x_next = packed_x_bytes(16, blocks * kQuantBlock);
  const auto* x_scales = reinterpret_cast<const float*>(x + blocks * kQuadTileBytes);
  std::memset(&totals, 0, sizeof totals);
  for (int64_t b = 0; b < blocks; ++b) {
    int8_block<Tiles, WeightTiles, RowTiles>(weights.values + b * weights.block_bytes, weights.stride, x + b * kQuadTileBytes,
                                             x_next, sums);
    __m512 row_scales[2];
    for (int j = 0; j < RowTiles; ++j) {
      row_scales[j] = _mm512_loadu_ps(reinterpret_cast<const float*>(reinterpret_cast<const char*>(x_scales + b * 16) + j * x_next));
    }
    for (int64_t n = 0; n < 16 * WeightTiles; ++n) {
      const __m512 w_scale = _mm512_set1_ps(weights.scales[n * blocks + b]);
      for (int j = 0; j < RowTiles; ++j) {
        const __m512 sum = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(sums.c[n] + 16 * j)), w_scale);
        float* total = totals.c[n] + 16 * j;
        _mm512_store_ps(total, _mm512_fmadd_ps(sum, row_scales[j], _mm512_load_ps(total)));
      }
    }
  }
}

template <class Tiles, class Block>
void int8_gemm_packed(const void* packed, int64_t m0, int64_t m, const Block* w, int64_t n, int64_t k, float* c,
                      int64_t ldc) {
  const int64_t blocks = k / kQuantBlock;
  const char* x = static_cast<const char*>(packed) + m0 / 16 * packed_x_bytes(16, k);
  thread_local std::vector<int8_t> staged;
  thread_local std::vector<float> scales;
  Tiles::configure(kInt8Shapes);
  BlockOut sums, totals;
  for (int64_t n0 = 0; n0 < n; n0 += kPanelCols) {
    const int64_t cols = std::min(kPanelCols, n - n0);
    const WeightRows weights = weight_rows(w, n0, n, k, staged, scales);
    for (int64_t r0 = 0; r0 < m; r0 += kBlockRows) {
      const int64_t rows = std::min(kBlockRows, m - r0);
      const char* x_rows = x + r0 / 16 * packed_x_bytes(16, k);
      if (cols > 16) {
        if (rows > 16) {
          int8_rows<Tiles, 2, 2>(weights, x_rows, blocks, sums, totals);
        } else {
          int8_rows<Tiles, 2, 1>(weights, x_rows, blocks, sums, totals);
        }
      } else if (rows > 16) {
        int8_rows<Tiles, 1, 2>(weights, x_rows, blocks, sums, totals);
      } else {
        int8_rows<Tiles, 1, 1>(weights, x_rows, blocks, sums, totals);
      }
      write_block(totals, rows, cols, c + r0 * ldc + n0, ldc, false, true);
    }
  }
  Tiles::release();
}

template <class Tiles>
void quant_gemm_packed(const void* packed, int64_t m0, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
                       float* c, int64_t ldc) {
  if (dtype == DType::Q8) {
    int8_gemm_packed<Tiles>(packed, m0, m, static_cast<const BlockQ8*>(w), n, k, c, ldc);
  } else {
    int8_gemm_packed<Tiles>(packed, m0, m, static_cast<const BlockQ4*>(w), n, k, c, ldc);
  }
}

template <class Tiles>
void quant_gemm(const uint8_t* xq, const float* xs, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
                float* c, int64_t ldc) {
  thread_local std::vector<char> packed;
  packed.resize(static_cast<size_t>(packed_x_bytes(m, k)));
  pack_x(xq, xs, m, k, packed.data());
  quant_gemm_packed<Tiles>(packed.data(), 0, m, dtype, w, n, k, c, ldc);
}

}  // namespace

// narrow() is avx512bf16's: the amx path rounds activations as that one does.
Bf16GemmKernels amx_bf16_kernels() {
  return {bf16_gemm<AmxTiles>, avx512bf16_kernels().narrow, packed_a_bytes, pack_a, bf16_gemm_packed<AmxTiles>};
}
QuantGemmKernels amx_quant_kernels() {
  return {prepare_x, quant_gemm<AmxTiles>, packed_x_bytes, pack_x, quant_gemm_packed<AmxTiles>};
}
Bf16GemmKernels amx_model_bf16_kernels() {
  return {bf16_gemm<AmxTileModel>, avx512bf16_kernels().narrow, packed_a_bytes, pack_a, bf16_gemm_packed<AmxTileModel>};
}
QuantGemmKernels amx_model_quant_kernels() {
  return {prepare_x, quant_gemm<AmxTileModel>, packed_x_bytes, pack_x, quant_gemm_packed<AmxTileModel>};
}

namespace {

// The probe's peaks: four independent tile products per iteration on
// full tiles that stay in the tile registers (C 0..3 from A 4/5 and B 6/7);
// bf16 pairs into f32, or signed bytes into int32.
template <bool Int8>
double amx_loop(int64_t iterations) {
  AmxTiles::configure(kFullTiles);
  alignas(64) static const uint8_t zeros[16][64] = {};
  AmxTiles::load_a<0>(zeros, 64);
  AmxTiles::load_a<1>(zeros, 64);
  AmxTiles::load_b<0>(zeros, 64);
  AmxTiles::load_b<1>(zeros, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    if constexpr (Int8) {
      AmxTiles::dot_s8s8<0, 0>();
      AmxTiles::dot_s8s8<0, 1>();
      AmxTiles::dot_s8s8<1, 0>();
      AmxTiles::dot_s8s8<1, 1>();
    } else {
      AmxTiles::dot_bf16<0, 0>();
      AmxTiles::dot_bf16<0, 1>();
      AmxTiles::dot_bf16<1, 0>();
      AmxTiles::dot_bf16<1, 1>();
    }
  }
  alignas(64) int32_t out[16][16];
  AmxTiles::store_c<0, 0>(out, 64);
  AmxTiles::release();
  return out[0][0];
}

}  // namespace

double amx_bf16_loop(int64_t iterations) { return amx_loop<false>(iterations); }
double amx_int8_loop(int64_t iterations) { return amx_loop<true>(iterations); }

}  // namespace slm::cpu
SLM_TARGET_END
#endif
