// Matrix products with bf16 weights on CPUs with AVX512-BF16 (vdpbf16ps:
// 32 bf16 products accumulated into 16 f32 lanes per instruction). The
// activations are rounded to bf16 once per product, the way bf16 inference
// engines do; accumulation stays f32.
#if defined(__x86_64__)
#include "kernels/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

// Everything below, and nothing included above, is compiled for this target.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace slm::cpu {

namespace {

// The classic GEMM shape: each accumulator holds 16 outputs of one row of C,
// so nothing is reduced horizontally. vdpbf16ps multiplies pairs along K,
// so B is repacked per panel as [K/2][32 columns][2] and each A pair is
// broadcast. Block: 8 rows of A × 32 columns of B = 16 accumulators.
constexpr int64_t kRows = 8;
constexpr int64_t kCols = 32;

// B rows [n0, n0+cols) (cols ≤ 32) into packed[(K+1)/2][32][2], zero-padded.
// A pair (B[c][2p], B[c][2p+1]) is one 32-bit word of row c, so packing is a
// transpose of 32-bit words.
void pack_panel(const uint16_t* B, int64_t K, int64_t cols, uint16_t* packed) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t full_pairs = K / 2;
  auto* out = reinterpret_cast<uint32_t*>(packed);
  for (int64_t c = 0; c < kCols; ++c) {
    if (c >= cols) {
      for (int64_t p = 0; p < pairs; ++p) out[p * kCols + c] = 0;
      continue;
    }
    const uint16_t* row = B + c * K;
    for (int64_t p = 0; p < full_pairs; ++p) {
      uint32_t word;
      std::memcpy(&word, row + 2 * p, sizeof word);
      out[p * kCols + c] = word;
    }
    if (K % 2) out[full_pairs * kCols + c] = row[K - 1];
  }
}

template <int MR>
void block(const uint32_t* A_pairs, int64_t lda_pairs, const uint16_t* packed, int64_t pairs, float* C, int64_t ldc,
           __mmask16 mask_lo, __mmask16 mask_hi) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(packed + p * kCols * 2);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(packed + p * kCols * 2 + 32);
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A_pairs[i * lda_pairs + p]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(C + i * ldc, mask_lo, acc[i][0]);
    _mm512_mask_storeu_ps(C + i * ldc + 16, mask_hi, acc[i][1]);
  }
}

using BlockFn = void (*)(const uint32_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, __mmask16, __mmask16);
constexpr BlockFn kBlocks[kRows] = {block<1>, block<2>, block<3>, block<4>, block<5>, block<6>, block<7>, block<8>};

inline __mmask16 lane_mask(int64_t lanes) {
  return lanes >= 16 ? static_cast<__mmask16>(0xffff) : lanes <= 0 ? 0 : static_cast<__mmask16>((1u << lanes) - 1u);
}

// A is [M][lda] bf16 with lda even and zero padding past K.
void gemm(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t N, int64_t K, float* C, int64_t ldc) {
  const int64_t pairs = (K + 1) / 2;
  thread_local std::vector<uint16_t> packed;
  packed.resize(static_cast<size_t>(pairs * kCols * 2));
  const auto* A_pairs = reinterpret_cast<const uint32_t*>(A);
  for (int64_t n = 0; n < N; n += kCols) {
    const int64_t cols = std::min(kCols, N - n);
    pack_panel(B + n * K, K, cols, packed.data());
    const __mmask16 lo = lane_mask(cols), hi = lane_mask(cols - 16);
    for (int64_t m = 0; m < M; m += kRows) {
      const int64_t rows = std::min(kRows, M - m);
      kBlocks[rows - 1](A_pairs + m * (lda / 2), lda / 2, packed.data(), pairs, C + m * ldc + n, ldc, lo, hi);
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

}  // namespace

Bf16GemmKernels avx512bf16_kernels() { return {gemm, narrow}; }

}  // namespace slm::cpu
#endif
