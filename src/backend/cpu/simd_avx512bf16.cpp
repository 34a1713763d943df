// Matrix products with bf16 weights on CPUs with AVX512-BF16 (vdpbf16ps:
// 32 bf16 products accumulated into 16 f32 lanes per instruction). The
// activations are rounded to bf16 once per product, the way bf16 inference
// engines do; accumulation stays f32.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

// Everything below, and nothing included above, is compiled for this target.
SLM_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512bf16,fma")
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "backend/cpu/simd_avx512_inline.h"
#include "backend/cpu/simd_avx512_panels.h"

namespace slm::cpu {

namespace {

// The classic GEMM shape: each accumulator holds 16 outputs of one row of C,
// so nothing is reduced horizontally. vdpbf16ps multiplies pairs along K,
// so B is repacked per panel as [K/2][48 columns][2] and each A pair is
// broadcast. Block: 8 rows of A × 48 columns of B = 24 accumulators, which
// leaves registers for the three B vectors and the broadcast; per pair of K
// it issues 11 loads for 24 dot products (8 × 32 issued 10 for 16).
constexpr int64_t kRows = 8;
constexpr int64_t kVectors = 3;
constexpr int64_t kCols = 16 * kVectors;

// Panel of a [N][K] B (row stride ldb): rows [0, cols) (cols ≤ kCols) into
// packed[(K+1)/2][kCols] words, zero-padded. A pair (B[c][2p], B[c][2p+1]) is
// one 32-bit word of row c, so packing is a transpose of 32-bit words: 16×16
// blocks in registers, the ragged edges word by word.
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

template <int MR>
void block(const uint32_t* A_pairs, int64_t lda_pairs, const uint32_t* packed, int64_t pairs, float* C, int64_t ldc,
           const __mmask16* masks, bool accumulate) {
  __m512 acc[MR][kVectors];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kVectors; ++v) acc[i][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh b[kVectors];
    for (int v = 0; v < kVectors; ++v) b[v] = (__m512bh)_mm512_loadu_si512(packed + p * kCols + 16 * v);
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A_pairs[i * lda_pairs + p]));
      for (int v = 0; v < kVectors; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kVectors; ++v) {
      float* c = C + i * ldc + 16 * v;
      if (accumulate) acc[i][v] = _mm512_add_ps(acc[i][v], _mm512_maskz_loadu_ps(masks[v], c));
      _mm512_mask_storeu_ps(c, masks[v], acc[i][v]);
    }
  }
}

using BlockFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, const __mmask16*, bool);
constexpr BlockFn kBlocks[kRows] = {block<1>, block<2>, block<3>, block<4>, block<5>, block<6>, block<7>, block<8>};

// A is [M][lda] bf16 with lda even and zero padding past K.
void gemm(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t ldb, Bf16Layout layout, int64_t N,
          int64_t K, float* C, int64_t ldc, bool accumulate) {
  const int64_t pairs = (K + 1) / 2;
  thread_local std::vector<uint32_t> packed;
  packed.resize(static_cast<size_t>(pairs * kCols));
  const auto* A_pairs = reinterpret_cast<const uint32_t*>(A);
  for (int64_t n = 0; n < N; n += kCols) {
    const int64_t cols = std::min(kCols, N - n);
    if (layout == Bf16Layout::NK) {
      pack_panel_nk(B + n * ldb, ldb, K, cols, packed.data());
    } else {
      pack_panel_kn<kCols>(B + n, ldb, K, cols, packed.data());
    }
    __mmask16 masks[kVectors];
    for (int64_t v = 0; v < kVectors; ++v) masks[v] = lane_mask(cols - 16 * v);
    for (int64_t m = 0; m < M; m += kRows) {
      const int64_t rows = std::min(kRows, M - m);
      kBlocks[rows - 1](A_pairs + m * (lda / 2), lda / 2, packed.data(), pairs, C + m * ldc + n, ldc, masks,
                        accumulate);
    }
  }
}

void narrow(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(out + i, (__m512i)v);
  }
  for (; i < n; ++i) out[i] = f32_to_bf16(x[i]);
}

// Σ x·w of a bf16 row with prepare_narrowed_x's x: vdpbf16ps takes 32 products an
// instruction, against a shift or mask and an FMA per 16 when the weights
// are widened, and reads x at half the bytes; one thread streams the
// weights from memory about 1.5× as fast.
float bf16_dot(const float* prepared, const uint16_t* w, int64_t k) {
  const auto* x = reinterpret_cast<const uint16_t*>(prepared);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t i = 0;
  for (; i + 64 <= k; i += 64) {
    prefetch_ahead<64 * sizeof(uint16_t)>(w + i);
    a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(x + i), (__m512bh)_mm512_loadu_si512(w + i));
    a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(x + i + 32), (__m512bh)_mm512_loadu_si512(w + i + 32));
  }
  for (; i < k; i += 32) {
    const __mmask32 m = lane_mask32(k - i);
    a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(x + i), (__m512bh)_mm512_maskz_loadu_epi16(m, w + i));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

}  // namespace

VectorKernels avx512bf16_vector_kernels() {
  VectorKernels kernels = avx512_kernels();
  kernels.prepare_bf16_x = prepare_narrowed_x<narrow>;
  kernels.bf16_prepared = bf16_dot;
  return kernels;
}

Bf16GemmKernels avx512bf16_kernels() { return {gemm, narrow, nullptr, nullptr, nullptr}; }

}  // namespace slm::cpu
SLM_TARGET_END
#endif
