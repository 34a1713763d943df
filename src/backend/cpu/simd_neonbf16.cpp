// AArch64 path neonbf16: CPUs with the bf16 and int8 matrix instructions of
// ARMv8.6 (FEAT_BF16: BFMMLA, BFDOT; FEAT_I8MM: SMMLA), such as Neoverse
// V1/N2/V2 (Graviton 3 and 4) and Apple M2 and later. BFMMLA and SMMLA
// multiply a 2×4 (bf16) or 2×8 (int8) tile of A by the same of B into the
// 2×2 block of C they share, so both GEMMs work on pairs of rows and pairs
// of columns. The activations of bf16 products are rounded to bf16 once per
// product, as on avx512bf16; accumulation stays f32. This file alone is
// compiled for ARMv8.6; simd.cpp calls it only when the CPU reports both
// features.
#if defined(__aarch64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <arm_neon.h>

#include <algorithm>
#include <vector>

// Everything below, and nothing included above, is compiled for this target.
SLM_TARGET_BEGIN("arch=armv8.6-a+bf16+i8mm")

namespace slm::cpu {

namespace {

// Four floats rounded to bf16 to nearest even, NaNs kept and made quiet: the
// integer recipe of f32_to_bf16, so every path narrows alike (BFCVTN
// follows FPCR and flushes subnormals).
inline uint16x4_t narrow4(const float* x) {
  const uint32x4_t bits = vreinterpretq_u32_f32(vld1q_f32(x));
  const uint32x4_t nan = vcgtq_u32(vandq_u32(bits, vdupq_n_u32(0x7fffffffu)), vdupq_n_u32(0x7f800000u));
  const uint32x4_t odd = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
  const uint32x4_t rounded = vaddq_u32(bits, vaddq_u32(vdupq_n_u32(0x7fffu), odd));
  return vshrn_n_u32(vbslq_u32(nan, vorrq_u32(bits, vdupq_n_u32(0x00400000u)), rounded), 16);
}

void narrow(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vst1q_u16(out + i, vcombine_u16(narrow4(x + i), narrow4(x + i + 4)));
  for (; i < n; ++i) out[i] = f32_to_bf16(x[i]);
}

inline bfloat16x8_t load_bf16(const uint16_t* p) { return vreinterpretq_bf16_u16(vld1q_u16(p)); }

// Σ x·w of a bf16 row with prepare_narrowed_x's x: BFDOT takes 8 products an
// instruction and reads x at half the bytes. The last partial group of 8
// weights is copied so that nothing past the row is read.
float bf16_dot(const float* prepared, const uint16_t* w, int64_t k) {
  const auto* x = reinterpret_cast<const uint16_t*>(prepared);
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    a0 = vbfdotq_f32(a0, load_bf16(x + i), load_bf16(w + i));
    a1 = vbfdotq_f32(a1, load_bf16(x + i + 8), load_bf16(w + i + 8));
    a2 = vbfdotq_f32(a2, load_bf16(x + i + 16), load_bf16(w + i + 16));
    a3 = vbfdotq_f32(a3, load_bf16(x + i + 24), load_bf16(w + i + 24));
  }
  for (; i + 8 <= k; i += 8) a0 = vbfdotq_f32(a0, load_bf16(x + i), load_bf16(w + i));
  if (i < k) {
    uint16_t tail[8] = {};
    std::copy(w + i, w + k, tail);
    a1 = vbfdotq_f32(a1, load_bf16(x + i), load_bf16(tail));
  }
  return vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
}

// The bf16 GEMM. Both operands are packed into BFMMLA's tiles: A as row
// pairs, [M/2][K/4][8] (four values of the first row, then four of the
// second), B as column pairs in panels of 8 columns, [N/8][K/4][4 pairs][8];
// zero past M, N and K. A block of 8 rows × 8 columns keeps its 16
// accumulators, 4 A and 4 B tiles in registers: 16 BFMMLA per 8 loads.
constexpr int64_t kPanelCols = 8;
constexpr int64_t kBlockPairs = 4;

void pack_rows(const uint16_t* A, int64_t M, int64_t lda, int64_t K, uint16_t* out) {
  const int64_t steps = (K + 3) / 4, full = K / 4;
  const uint16x4_t zero = vdup_n_u16(0);
  for (int64_t p = 0; p < (M + 1) / 2; ++p) {
    const uint16_t* r0 = A + 2 * p * lda;
    const uint16_t* r1 = 2 * p + 1 < M ? r0 + lda : nullptr;
    uint16_t* o = out + p * steps * 8;
    for (int64_t s = 0; s < full; ++s) {
      vst1q_u16(o + 8 * s, vcombine_u16(vld1_u16(r0 + 4 * s), r1 ? vld1_u16(r1 + 4 * s) : zero));
    }
    for (int64_t s = full; s < steps; ++s) {
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t k = 4 * s + j;
        o[8 * s + j] = k < K ? r0[k] : 0;
        o[8 * s + 4 + j] = r1 && k < K ? r1[k] : 0;
      }
    }
  }
}

// Columns [0, cols) of B (cols ≤ 8) as one panel; B(c, k) is B[c][k] for NK
// and B[k][c] for KN.
void pack_panel(const uint16_t* B, int64_t ldb, Bf16Layout layout, int64_t K, int64_t cols, uint16_t* out) {
  const int64_t steps = (K + 3) / 4;
  std::fill(out, out + steps * 4 * 8, uint16_t{0});
  for (int64_t c = 0; c < cols; ++c) {
    uint16_t* o = out + (c / 2) * 8 + (c % 2) * 4;
    if (layout == Bf16Layout::NK) {
      const uint16_t* row = B + c * ldb;
      int64_t s = 0;
      for (; 4 * s + 4 <= K; ++s) vst1_u16(o + 32 * s, vld1_u16(row + 4 * s));
      for (int64_t k = 4 * s; k < K; ++k) o[32 * s + k % 4] = row[k];
    } else {
      for (int64_t k = 0; k < K; ++k) o[32 * (k / 4) + k % 4] = B[k * ldb + c];
    }
  }
}

// Rows [0, rows) and columns [0, cols) of an 8 × 8 block of C from RP row
// pairs of packed A and one packed panel.
template <int RP>
void block(const uint16_t* a, int64_t steps, const uint16_t* panel, float* C, int64_t ldc, int64_t rows,
           int64_t cols, bool accumulate) {
  float32x4_t acc[RP][4];
  for (int i = 0; i < RP; ++i) {
    for (int q = 0; q < 4; ++q) acc[i][q] = vdupq_n_f32(0.0f);
  }
  for (int64_t s = 0; s < steps; ++s) {
    bfloat16x8_t b[4];
    for (int q = 0; q < 4; ++q) b[q] = load_bf16(panel + 32 * s + 8 * q);
    for (int i = 0; i < RP; ++i) {
      const bfloat16x8_t ai = load_bf16(a + (i * steps + s) * 8);
      for (int q = 0; q < 4; ++q) acc[i][q] = vbfmmlaq_f32(acc[i][q], ai, b[q]);
    }
  }
  // acc[i][q] holds C(2i, 2q), C(2i, 2q+1), C(2i+1, 2q), C(2i+1, 2q+1).
  for (int i = 0; i < RP; ++i) {
    for (int h = 0; h < 2 && 2 * i + h < rows; ++h) {
      float* c = C + (2 * i + h) * ldc;
      const auto half = [&](int q) { return h ? vget_high_f32(acc[i][q]) : vget_low_f32(acc[i][q]); };
      float32x4_t lo = vcombine_f32(half(0), half(1)), hi = vcombine_f32(half(2), half(3));
      if (cols == kPanelCols) {
        if (accumulate) {
          lo = vaddq_f32(lo, vld1q_f32(c));
          hi = vaddq_f32(hi, vld1q_f32(c + 4));
        }
        vst1q_f32(c, lo);
        vst1q_f32(c + 4, hi);
      } else {
        float row[kPanelCols];
        vst1q_f32(row, lo);
        vst1q_f32(row + 4, hi);
        for (int64_t n = 0; n < cols; ++n) c[n] = accumulate ? c[n] + row[n] : row[n];
      }
    }
  }
}

using BlockFn = void (*)(const uint16_t*, int64_t, const uint16_t*, float*, int64_t, int64_t, int64_t, bool);
constexpr BlockFn kBlocks[kBlockPairs] = {block<1>, block<2>, block<3>, block<4>};

// Every panel of B is packed first (the callers' tiles are at most 96
// columns: a few hundred KB at most), so that each 8-row block of A is read
// from L1 across all of them.
void gemm(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t ldb, Bf16Layout layout, int64_t N,
          int64_t K, float* C, int64_t ldc, bool accumulate) {
  const int64_t steps = (K + 3) / 4, pairs = (M + 1) / 2, panels = (N + kPanelCols - 1) / kPanelCols;
  const int64_t panel_size = steps * 4 * 8;
  thread_local std::vector<uint16_t> a, b;
  a.resize(static_cast<size_t>(pairs * steps * 8));
  b.resize(static_cast<size_t>(panels * panel_size));
  pack_rows(A, M, lda, K, a.data());
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kPanelCols;
    const uint16_t* origin = layout == Bf16Layout::NK ? B + n0 * ldb : B + n0;
    pack_panel(origin, ldb, layout, K, std::min(kPanelCols, N - n0), b.data() + p * panel_size);
  }
  for (int64_t p0 = 0; p0 < pairs; p0 += kBlockPairs) {
    const int64_t block_pairs = std::min(kBlockPairs, pairs - p0);
    const int64_t rows = std::min(2 * kBlockPairs, M - 2 * p0);
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n0 = p * kPanelCols;
      kBlocks[block_pairs - 1](a.data() + p0 * steps * 8, steps, b.data() + p * panel_size, C + 2 * p0 * ldc + n0,
                               ldc, rows, std::min(kPanelCols, N - n0), accumulate);
    }
  }
}

// The integer GEMM of q8/q4 prompts. prepare_x gives quantize_q8's blocks
// (values + 128, as every path's), flipped back to signed bytes as they are
// loaded. SMMLA takes 2 rows × 8 bytes of x and of w into a 2×2 block of
// exact int32 sums: four per 32-value block, whose sums the two scales then
// multiply into f32 totals. A tile is 4 rows × 4 columns; rows and columns
// past m and n repeat the last one and are not stored.
void quant_prepare_x(const float* x, int64_t k, uint8_t* q, float* scales) {
  const uint8x16_t offset = vdupq_n_u8(0x80);
  BlockQ8 block;
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    quantize_q8(x + b * kQuantBlock, kQuantBlock, &block);
    scales[b] = f16_to_f32(block.scale);
    for (int half = 0; half < 2; ++half) {
      const uint8x16_t values = vreinterpretq_u8_s8(vld1q_s8(block.q + 16 * half));
      vst1q_u8(q + b * kQuantBlock + 16 * half, veorq_u8(values, offset));
    }
  }
}

// The 32 weights of a block as four groups of 8 signed bytes.
struct Q8Groups {
  using Block = BlockQ8;
  static void load(const BlockQ8& w, int8x8_t (&g)[4]) {
    for (int s = 0; s < 4; ++s) g[s] = vld1_s8(w.q + 8 * s);
  }
};

// q4: low nibbles are elements 0..15, high ones 16..31, each stored plus 8.
struct Q4Groups {
  using Block = BlockQ4;
  static void load(const BlockQ4& w, int8x8_t (&g)[4]) {
    const uint8x16_t packed = vld1q_u8(w.q);
    const int8x16_t eight = vdupq_n_s8(8);
    const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0f))), eight);
    const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
    g[0] = vget_low_s8(lo);
    g[1] = vget_high_s8(lo);
    g[2] = vget_low_s8(hi);
    g[3] = vget_high_s8(hi);
  }
};

template <class Groups>
void quant_gemm_of(const uint8_t* xq, const float* xs, int64_t m, const typename Groups::Block* w, int64_t n,
                   int64_t k, float* c, int64_t ldc) {
  const int64_t blocks = k / kQuantBlock;
  const uint8x16_t offset = vdupq_n_u8(0x80);
  for (int64_t i0 = 0; i0 < m; i0 += 4) {
    const uint8_t* xr[4];
    const float* sr[4];
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t row = std::min(i0 + r, m - 1);
      xr[r] = xq + row * k;
      sr[r] = xs + row * blocks;
    }
    for (int64_t j0 = 0; j0 < n; j0 += 4) {
      const typename Groups::Block* wr[4];
      for (int64_t col = 0; col < 4; ++col) wr[col] = w + std::min(j0 + col, n - 1) * blocks;
      float32x4_t acc[2][2];
      for (auto& pair : acc) pair[0] = pair[1] = vdupq_n_f32(0.0f);
      for (int64_t b = 0; b < blocks; ++b) {
        int8x8_t g[4][4];
        float ws[4];
        for (int col = 0; col < 4; ++col) {
          Groups::load(wr[col][b], g[col]);
          ws[col] = f16_to_f32(wr[col][b].scale);
        }
        int32x4_t sum[2][2];
        for (auto& pair : sum) pair[0] = pair[1] = vdupq_n_s32(0);
        for (int s = 0; s < 4; ++s) {
          int8x16_t a[2];
          for (int p = 0; p < 2; ++p) {
            const int64_t at = b * kQuantBlock + 8 * s;
            const uint8x16_t pair = vcombine_u8(vld1_u8(xr[2 * p] + at), vld1_u8(xr[2 * p + 1] + at));
            a[p] = vreinterpretq_s8_u8(veorq_u8(pair, offset));
          }
          for (int q = 0; q < 2; ++q) {
            const int8x16_t bq = vcombine_s8(g[2 * q][s], g[2 * q + 1][s]);
            for (int p = 0; p < 2; ++p) sum[p][q] = vmmlaq_s32(sum[p][q], a[p], bq);
          }
        }
        for (int p = 0; p < 2; ++p) {
          const float x0 = sr[2 * p][b], x1 = sr[2 * p + 1][b];
          for (int q = 0; q < 2; ++q) {
            const float w0 = ws[2 * q], w1 = ws[2 * q + 1];
            const float lanes[4] = {x0 * w0, x0 * w1, x1 * w0, x1 * w1};
            acc[p][q] = vfmaq_f32(acc[p][q], vcvtq_f32_s32(sum[p][q]), vld1q_f32(lanes));
          }
        }
      }
      // acc[p][q] holds C(2p, 2q), C(2p, 2q+1), C(2p+1, 2q), C(2p+1, 2q+1).
      for (int p = 0; p < 2; ++p) {
        for (int q = 0; q < 2; ++q) {
          float lanes[4];
          vst1q_f32(lanes, acc[p][q]);
          for (int e = 0; e < 4; ++e) {
            const int64_t row = i0 + 2 * p + e / 2, col = j0 + 2 * q + e % 2;
            if (row < m && col < n) c[row * ldc + col] = lanes[e];
          }
        }
      }
    }
  }
}

void quant_gemm(const uint8_t* xq, const float* xs, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
                float* c, int64_t ldc) {
  if (dtype == DType::Q8) {
    quant_gemm_of<Q8Groups>(xq, xs, m, static_cast<const BlockQ8*>(w), n, k, c, ldc);
  } else {
    quant_gemm_of<Q4Groups>(xq, xs, m, static_cast<const BlockQ4*>(w), n, k, c, ldc);
  }
}

}  // namespace

VectorKernels neonbf16_vector_kernels() {
  VectorKernels kernels = neon_kernels();
  kernels.prepare_bf16_x = prepare_narrowed_x<narrow>;
  kernels.bf16_prepared = bf16_dot;
  return kernels;
}

Bf16GemmKernels neonbf16_gemm_kernels() { return {gemm, narrow, nullptr, nullptr, nullptr}; }

QuantGemmKernels neon_i8mm_gemm_kernels() { return {quant_prepare_x, quant_gemm, nullptr, nullptr, nullptr}; }

}  // namespace slm::cpu
SLM_TARGET_END
#endif
