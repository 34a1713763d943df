// AVX-512 (F, BW, VL) path. Compiled for that target whatever the build's
// baseline; only called when the CPU reports the features. Tails use masked
// loads, so no scalar remainder loop.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <utility>
#include <vector>

// Everything below, and nothing included above, is compiled for this target:
// a header compiled under it could leak these instructions into other files.
SLM_TARGET_BEGIN("avx512f,avx512bw,avx512vl,fma,f16c")
// GCC 12's own intrinsics (cvtepu16, slli, cvtph, reduce) read a deliberately
// undefined pass-through operand, which -Wuninitialized reports once inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "backend/cpu/simd_avx512_inline.h"
#include "backend/cpu/simd_x86_inline.h"

namespace slm::cpu {

namespace {

inline __m512 load_f32(const float* w, __mmask16 m) { return _mm512_maskz_loadu_ps(m, w); }

inline __m512 load_bf16(const uint16_t* w, __mmask16 m) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

inline __m512 load_f16(const uint16_t* w, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w)); }

template <class W, class Load>
inline float dot(const float* x, const W* w, int64_t k, Load load) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  constexpr __mmask16 all = 0xffff;
  int64_t i = 0;
  for (; i + 64 <= k; i += 64) {
    prefetch_ahead<64 * sizeof(W)>(w + i);
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load(w + i, all), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load(w + i + 16, all), a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), load(w + i + 32, all), a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), load(w + i + 48, all), a3);
  }
  for (; i < k; i += 16) {
    const __mmask16 m = lane_mask(k - i);
    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), load(w + i, m), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// 32 quantized values of a block as two vectors of 16 floats (before the scale).
inline void load_q8(const BlockQ8& b, __m512& lo, __m512& hi) {
  lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.q))));
  hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.q + 16))));
}

inline void load_q4(const BlockQ4& b, __m512& lo, __m512& hi) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.q));
  const __m128i nibble = _mm_set1_epi8(0x0f);
  const __m512i eight = _mm512_set1_epi32(8);
  lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, nibble)), eight));
  hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), nibble)), eight));
}


template <class Block, void (*Load)(const Block&, __m512&, __m512&)>
void widen_quantized(const Block* w, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    __m512 lo, hi;
    Load(w[b], lo, hi);
    const __m512 scale = _mm512_set1_ps(scale_of(w[b].scale));
    _mm512_storeu_ps(out + b * kQuantBlock, _mm512_mul_ps(lo, scale));
    _mm512_storeu_ps(out + b * kQuantBlock + 16, _mm512_mul_ps(hi, scale));
  }
}

float dot_f32(const float* x, const float* w, int64_t k) { return dot(x, w, k, load_f32); }
float dot_bf16(const float* x, const uint16_t* w, int64_t k) { return dot(x, w, k, load_bf16); }
float dot_f16(const float* x, const uint16_t* w, int64_t k) { return dot(x, w, k, load_f16); }

template <class Load>
inline void widen(const uint16_t* w, int64_t n, float* out, Load load) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, load(w + i, m));
  }
}

void widen_bf16(const uint16_t* w, int64_t n, float* out) { widen(w, n, out, load_bf16); }
void widen_f16(const uint16_t* w, int64_t n, float* out) { widen(w, n, out, load_f16); }

void axpy(float a, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

template <__m512 (*Load)(const uint16_t*, __mmask16)>
void axpy_widened(float a, const uint16_t* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, Load(x + i, m), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// e^x as 2^n · e^r with n = round(x / ln 2) and |r| ≤ ln2/2: a degree-6
// polynomial gives e^r to about 1 ulp; scalef applies 2^n and saturates to
// 0 or inf exactly where expf does.
inline __m512 exp16(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(g, sig), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

double exp_shifted(const float* x, float shift, float* out, int64_t n) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    // exp16(-inf) would be NaN: masked scores give exactly 0.
    const __mmask16 live = m & _mm512_cmp_ps_mask(v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
    const __m512 e = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(v, s)));
    _mm512_mask_storeu_ps(out + i, m, e);
    acc = _mm512_mask_add_ps(acc, m, acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}


// sgemm as BLAS kernels do it: op(B) is packed for each block of 256 along
// K into panels of 32 columns, [k][32] each (zero past N), so that the
// micro-kernel reads two vectors of B per k and broadcasts one element of
// each of 12 rows of A, read where it lies (row or column of A alike): 14
// loads feed 24 FMAs into a 12×32 tile of C held in registers. Rows of A
// are taken 192 at a time, so that their block stays in L2 while the
// panels pass.
constexpr int64_t kSgemmRows = 12, kSgemmCols = 32, kSgemmDepth = 256, kSgemmRowBlock = 192;

// Rows [p0, p0 + kc) of op(B) (K × N) as panels of kSgemmCols columns.
void pack_b(bool trans_b, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t N, float* out) {
  for (int64_t n0 = 0; n0 < N; n0 += kSgemmCols) {
    float* panel = out + n0 * kc;
    const int64_t cols = std::min(kSgemmCols, N - n0);
    if (!trans_b) {
      const __mmask16 lo = lane_mask(cols), hi = lane_mask(cols - 16);
      for (int64_t p = 0; p < kc; ++p) {
        const float* row = B + (p0 + p) * ldb + n0;
        _mm512_storeu_ps(panel + p * kSgemmCols, _mm512_maskz_loadu_ps(lo, row));
        _mm512_storeu_ps(panel + p * kSgemmCols + 16, _mm512_maskz_loadu_ps(hi, row + 16));
      }
      continue;
    }
    // op(B)[p][n] = B[n][p]: 16×16 blocks transposed in registers.
    for (int64_t c0 = 0; c0 < kSgemmCols; c0 += 16) {
      const int64_t rows = std::clamp<int64_t>(cols - c0, 0, 16);
      for (int64_t p = 0; p < kc; p += 16) {
        const __mmask16 depth = lane_mask(kc - p);
        __m512i r[16];
        for (int64_t i = 0; i < 16; ++i) {
          r[i] = i < rows ? _mm512_maskz_loadu_epi32(depth, B + (n0 + c0 + i) * ldb + p0 + p) : _mm512_setzero_si512();
        }
        transpose_16x16(r);
        for (int64_t t = 0; t < std::min<int64_t>(16, kc - p); ++t) {
          _mm512_storeu_si512(panel + (p + t) * kSgemmCols + c0, r[t]);
        }
      }
    }
  }
}

// C[MR, 32 masked] = alpha·A·panel + (first block: beta·C, else C). The
// panel's rows are `panel_stride` apart: packed, or op(B)'s own rows read in
// place; `masks` (the columns inside N) bound its loads as C's stores.
template <int MR, bool TransA>
void sgemm_tile(const float* a, int64_t lda, const float* panel, int64_t panel_stride, int64_t kc, float* c,
                int64_t ldc, const __mmask16 (&masks)[2], float alpha, float beta, bool first) {
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_maskz_loadu_ps(masks[0], panel + p * panel_stride);
    const __m512 b1 = _mm512_maskz_loadu_ps(masks[1], panel + p * panel_stride + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(TransA ? a[p * lda + i] : a[i * lda + p]);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha), keep = _mm512_set1_ps(first ? beta : 1.0f);
  const bool read_c = !first || beta != 0.0f;
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < 2; ++v) {
      float* out = c + i * ldc + 16 * v;
      __m512 r = _mm512_mul_ps(acc[i][v], scale);
      if (read_c) r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(masks[v], out), keep, r);
      _mm512_mask_storeu_ps(out, masks[v], r);
    }
  }
}

template <bool TransA, int... Rows>
constexpr auto sgemm_tiles(std::integer_sequence<int, Rows...>) {
  using Tile = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, const __mmask16(&)[2],
                        float, float, bool);
  return std::array<Tile, sizeof...(Rows)>{sgemm_tile<Rows + 1, TransA>...};
}

// The sixteen horizontal sums of v[0..15], lane j holding v[j]'s: pairs of
// lanes, then quads, then the four 128-bit quarters, added in a tree.
inline __m512 sums_of_16(const __m512 (&v)[16]) {
  __m512 t[8], u[4];
  for (int i = 0; i < 8; ++i) {
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 x01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
  const __m512 x23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88), _mm512_shuffle_f32x4(u[2], u[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, 0x88), _mm512_shuffle_f32x4(x01, x23, 0xDD));
}

// C = alpha·A·Bᵀ + beta·C for a few rows of A (a decoding step's query
// heads against a tile of keys): each output is the dot product of two rows
// as they lie, sixteen columns at a time reduced together, where packing
// would transpose all of B for a handful of rows.
void sgemm_few_rows_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
      const int64_t cols = std::min<int64_t>(16, N - n0);
      __m512 acc[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
      // The first row's pass asks for B's lines kDecodePrefetchBytes ahead:
      // decoding at depth streams the whole key cache this way, and alone
      // the hardware prefetcher kept it at 27 GB/s of 68 (docs/benchmarks.md).
      if (m == 0) {
        for (int64_t j = 0; j < cols; ++j) {
          for (int64_t k0 = 0; k0 < K; k0 += 16) prefetch_ahead<64>(B + (n0 + j) * ldb + k0);
        }
      }
      for (int64_t k0 = 0; k0 < K; k0 += 16) {
        const __mmask16 depth = lane_mask(K - k0);
        const __m512 av = _mm512_maskz_loadu_ps(depth, a + k0);
        // Rows past N load nothing (mask 0), so the accumulators stay in registers.
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) {
          const float* b = B + (n0 + std::min<int64_t>(j, cols - 1)) * ldb + k0;
          acc[j] = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(j < cols ? depth : 0, b), acc[j]);
        }
      }
      const __mmask16 mask = lane_mask(cols);
      float* c = C + m * ldc + n0;
      __m512 r = _mm512_mul_ps(sums_of_16(acc), _mm512_set1_ps(alpha));
      if (beta != 0.0f) r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, c), _mm512_set1_ps(beta), r);
      _mm512_mask_storeu_ps(c, mask, r);
    }
  }
}

// C = alpha·A·B + beta·C for Rows rows of A (not transposed), B read in
// place a row at a time, 64 columns at once: decoding's P·V (B the value
// tile) in one pass over B with its lines asked for 8 KiB ahead, where the
// row tile's 32 columns passed over each value row twice.
template <int Rows>
void sgemm_few_rows_nn(int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                       float beta, float* C, int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    __mmask16 masks[4];
    for (int v = 0; v < 4; ++v) masks[v] = lane_mask(N - n0 - 16 * v);
    __m512 acc[Rows][4];
#pragma GCC unroll 4
    for (int i = 0; i < Rows; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const float* b = B + k * ldb + n0;
      for (int64_t line = 0; line < std::min<int64_t>(64, N - n0); line += 16) prefetch_ahead<64>(b + line);
      __m512 bv[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) bv[v] = _mm512_maskz_loadu_ps(masks[v], b + 16 * v);
#pragma GCC unroll 4
      for (int i = 0; i < Rows; ++i) {
        const __m512 av = _mm512_set1_ps(A[i * lda + k]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
      }
    }
    const __m512 scale = _mm512_set1_ps(alpha), keep = _mm512_set1_ps(beta);
#pragma GCC unroll 4
    for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        float* out = C + i * ldc + n0 + 16 * v;
        __m512 r = _mm512_mul_ps(acc[i][v], scale);
        if (beta != 0.0f) r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(masks[v], out), keep, r);
        _mm512_mask_storeu_ps(out, masks[v], r);
      }
    }
  }
}

// Up to this many rows, A·Bᵀ runs as dot products (sgemm_few_rows_nt): per
// 16 columns and 64 deep, about 110 instructions a row against some 380 to
// pack B and 350 for a tile of up to 12 rows.
constexpr int64_t kFewRows = 4;

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  static constexpr auto kTiles = sgemm_tiles<false>(std::make_integer_sequence<int, kSgemmRows>());
  static constexpr auto kTransposedTiles = sgemm_tiles<true>(std::make_integer_sequence<int, kSgemmRows>());
  if (K == 0) return sgemm_empty_k(M, N, beta, C, ldc);
  if (trans_b && !trans_a && M <= kFewRows) {
    return sgemm_few_rows_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  if (!trans_b && !trans_a && M <= kFewRows) {
    static constexpr decltype(&sgemm_few_rows_nn<1>) kFew[] = {sgemm_few_rows_nn<1>, sgemm_few_rows_nn<2>,
                                                               sgemm_few_rows_nn<3>, sgemm_few_rows_nn<4>};
    return kFew[M - 1](N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  // One tile of rows reads each panel once: op(B)'s rows are then read where
  // they lie rather than copied (B not transposed).
  const bool in_place = !trans_b && M <= kSgemmRows;
  // Kept by each thread across calls: no allocation per product.
  thread_local std::vector<float> packed;
  const int64_t padded_n = (N + kSgemmCols - 1) / kSgemmCols * kSgemmCols;
  for (int64_t p0 = 0; p0 < K; p0 += kSgemmDepth) {
    const int64_t kc = std::min(kSgemmDepth, K - p0);
    if (!in_place) {
      packed.resize(static_cast<size_t>(padded_n * kc));
      pack_b(trans_b, B, ldb, p0, kc, N, packed.data());
    }
    for (int64_t m0 = 0; m0 < M; m0 += kSgemmRowBlock) {
      const int64_t m1 = std::min(M, m0 + kSgemmRowBlock);
      for (int64_t n0 = 0; n0 < N; n0 += kSgemmCols) {
        const __mmask16 masks[2] = {lane_mask(N - n0), lane_mask(N - n0 - 16)};
        const float* panel = in_place ? B + p0 * ldb + n0 : packed.data() + n0 * kc;
        const int64_t panel_stride = in_place ? ldb : kSgemmCols;
        for (int64_t i0 = m0; i0 < m1; i0 += kSgemmRows) {
          const int64_t rows = std::min(kSgemmRows, m1 - i0);
          const float* a = trans_a ? A + p0 * lda + i0 : A + i0 * lda + p0;
          (trans_a ? kTransposedTiles : kTiles)[rows - 1](a, lda, panel, panel_stride, kc, C + i0 * ldc + n0, ldc,
                                                          masks, alpha, beta, p0 == 0);
        }
      }
    }
  }
}

}  // namespace

VectorKernels avx512_kernels() {
  return {dot_f32,
          dot_bf16,
          copy_padded,
          dot_bf16,
          dot_f16,
          widen_bf16,
          widen_f16,
          widen_quantized<BlockQ8, load_q8>,
          widen_quantized<BlockQ4, load_q4>,
          nullptr,
          sgemm,
          axpy,
          axpy_widened<load_bf16>,
          axpy_widened<load_f16>,
          silu_mul,
          exp_shifted};
}

}  // namespace slm::cpu
SLM_TARGET_END
#endif
