// AVX2 + FMA + F16C path. Compiled for that target whatever the build's
// baseline; only called when the CPU reports the features.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

// Everything below, and nothing included above, is compiled for this target:
// a header compiled under it could leak these instructions into other files.
SLM_TARGET_BEGIN("avx2,fma,f16c")

#include "backend/cpu/simd_x86_arranged.h"
#include "backend/cpu/simd_x86_quant_gemm.h"

namespace slm::cpu {

namespace {

// Loaders widen eight weights to f32: one struct per weight dtype, so the
// templated loop below is instantiated for each (lambdas would not inherit
// the target pragma).
struct F32Weights {
  static __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
  static float load1(const float* w) { return *w; }
};

struct Bf16Weights {
  static __m256 load8(const uint16_t* w) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float load1(const uint16_t* w) { return bf16_to_f32(*w); }
};

struct F16Weights {
  static __m256 load8(const uint16_t* w) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))); }
  static float load1(const uint16_t* w) { return f16_to_f32(*w); }
};

// Four independent accumulators hide the FMA latency; the tail is scalar.
template <class Weights, class W>
float dot(const float* x, const W* w, int64_t k) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    prefetch_ahead<32 * sizeof(W)>(w + i);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), Weights::load8(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), Weights::load8(w + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), Weights::load8(w + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), Weights::load8(w + i + 24), a3);
  }
  for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), Weights::load8(w + i), a0);
  float sum = horizontal_sum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < k; ++i) sum += x[i] * Weights::load1(w + i);
  return sum;
}

float dot_f32(const float* x, const float* w, int64_t k) { return dot<F32Weights>(x, w, k); }
float dot_bf16(const float* x, const uint16_t* w, int64_t k) { return dot<Bf16Weights>(x, w, k); }
float dot_f16(const float* x, const uint16_t* w, int64_t k) { return dot<F16Weights>(x, w, k); }

template <class Weights>
void widen(const uint16_t* w, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, Weights::load8(w + i));
  for (; i < n; ++i) out[i] = Weights::load1(w + i);
}

void widen_bf16(const uint16_t* w, int64_t n, float* out) { widen<Bf16Weights>(w, n, out); }
void widen_f16(const uint16_t* w, int64_t n, float* out) { widen<F16Weights>(w, n, out); }

// The 32 values of a q8/q4 block as four vectors of eight f32 (unscaled).
inline void load_q8(const BlockQ8& w, __m256 (&v)[4]) {
  for (int j = 0; j < 4; ++j) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.q + 8 * j));
    v[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
}

inline void load_q4(const BlockQ4& w, __m256 (&v)[4]) {
  const __m128i low = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.q));
  // Elements 0..15 sit in the low nibbles, 16..31 in the high ones.
  const __m128i halves[2] = {_mm_sub_epi8(_mm_and_si128(packed, low), eight),
                             _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), low), eight)};
  for (int h = 0; h < 2; ++h) {
    v[2 * h] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(halves[h]));
    v[2 * h + 1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(halves[h], 8)));
  }
}

template <class Block, void (*Load)(const Block&, __m256 (&)[4])>
void widen_quantized(const Block* w, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    __m256 v[4];
    Load(w[b], v);
    const __m256 scale = _mm256_set1_ps(scale_of(w[b].scale));
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + b * kQuantBlock + 8 * j, _mm256_mul_ps(v[j], scale));
  }
}

// The integer dot products (QuantDotKernels) on AVX2, for decoding with
// q8/q4 weights: vpmaddubsw multiplies 32 unsigned by 32 signed bytes and
// adds neighbours into 16 int16 lanes, vpmaddwd adds those pairs into eight
// int32 lanes. That is two instructions for 32 products, where widening the
// weights to f32 for FMAs took about a dozen.

// quantize_q8 (src/core/quant.cpp) step by step, so the blocks are
// bit-identical: amax/127 rounded through f16, values scaled by its inverse,
// rounded to nearest even (the default rounding of vcvtps2dq) and clamped to
// ±127.
void quantize_x(const float* x, int64_t k, BlockQ8* out) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256i limit = _mm256_set1_epi32(127), neg_limit = _mm256_set1_epi32(-127);
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(x + b * kQuantBlock + 8 * j);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[j]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    const uint16_t half = f32_to_f16(_mm_cvtss_f32(m) / 127.0f);
    const float scale = f16_to_f32(half);
    const __m256 inverse = _mm256_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      q[j] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], inverse)), limit), neg_limit);
    }
    // The packs work within 128-bit lanes: int32 groups 0,1 | 2,3 come out
    // as bytes of groups 0,2,1,3 per lane pair; one permute restores order.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    out[b].scale = half;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q),
                        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
}

// Σ w·x of one q8 block: vpmaddubsw wants one unsigned operand, so the
// weights' signs move onto x (|w| · sign(w)·x). A pair of products is at
// most 2·128·127 in magnitude, inside int16. (The VNNI step's start value,
// -128·Σx, is not needed.)
[[gnu::always_inline]] inline void add_q8_block(const ArrangedBlock& x, const BlockQ8& w, __m256& total) {
  const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q));
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q));
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq));
  const __m256i sum = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(x.scale * scale_of(w.scale)), total);
}

// Σ w·x of two q4 blocks (Two) or a last one: the nibble bytes side by
// side, their levels (0..15, the unsigned operand) against x.low and
// x.high. Each int16 lane adds two pairs of products, at most 4·15·127 in
// magnitude; the int32 sums start from -8·Σx, which makes levels weights.
struct AddQ4Pair {
  template <bool Two>
  [[gnu::always_inline]] static void add(const ArrangedPair& x, const BlockQ4* w, __m256& total) {
    const __m256i bytes = q4_pair_bytes<Two>(w), nibble = _mm256_set1_epi8(0x0f);
    const __m256i low = _mm256_maddubs_epi16(_mm256_and_si256(bytes, nibble),
                                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.low)));
    const __m256i high = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble),
                                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.high)));
    const __m256i sum = _mm256_add_epi32(_mm256_madd_epi16(_mm256_add_epi16(low, high), _mm256_set1_epi16(1)),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.minus_8_sum)));
    total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), q4_pair_scales<Two>(x, w), total);
  }
};

// A quad's products for the integer GEMM of prompts (simd_x86_quant_gemm.h)
// with vpmaddubsw: x plus 128 (at most 255) times q4 weights (-8..7) makes
// int16 pairs of at most 2·255·8 = 4080 in magnitude, so a block's eight
// quads sum in int16 lanes (at most 32640) and one vpmaddwd widens them.
struct Avx2Step {
  using Sum = __m256i;
  static __m256i start(__m256i) { return _mm256_setzero_si256(); }
  static __m256i add(__m256i sum, __m256i x, __m256i w) {
    sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(x, w));
    // Kept a chain: GCC otherwise reassociates the unrolled adds into a tree
    // whose 48 products of a block spill to the stack.
    __asm__("" : "+x"(sum));
    return sum;
  }
  static __m256i finish(__m256i sum, const int32_t* offsets) {
    return _mm256_add_epi32(_mm256_madd_epi16(sum, _mm256_set1_epi16(1)),
                            _mm256_load_si256(reinterpret_cast<const __m256i*>(offsets)));
  }
};

// The same for q8 weights, whose pairs against x + 128 would overflow
// int16: x is read back signed (quantize_q8's values, at most 127 in
// magnitude, so that moving a sign onto one never overflows), the weights'
// signs move onto it as in add_q8_block (pairs of at most 2·128·127), and
// each quad is widened to int32 at once. No offset: x is multiplied as it is.
struct Avx2SignStep {
  using Sum = __m256i;
  static __m256i start(__m256i) { return _mm256_setzero_si256(); }
  static __m256i add(__m256i sum, __m256i x_plus_128, __m256i w) {
    const __m256i x = _mm256_xor_si256(x_plus_128, _mm256_set1_epi8(static_cast<char>(0x80)));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static __m256i finish(__m256i sum, const int32_t*) { return sum; }
};

// gemm_nt and sgemm as BLAS kernels do them: B is first packed into column
// groups of 16, [k][16] each (zero past n), so that the micro-kernel reads
// two aligned vectors of B per k and broadcasts one element of each of six
// rows of A: eight loads feed twelve FMAs into a 6×16 tile of C held in
// registers.
constexpr int64_t kPackCols = 16, kMr = 6;

// `rows` consecutive weight rows from row r0 (row length k), widened to f32.
// The rows are one contiguous run of memory, so this is a single sequential
// stream for the hardware prefetcher: reading the eight rows side by side
// instead packed 2.8 GB/s of bf16 weights on one thread against 4.3.
void widen_rows(DType dtype, const void* w, int64_t r0, int64_t rows, int64_t k, float* out) {
  const int64_t n = rows * k, blocks = r0 * (k / kQuantBlock);
  switch (dtype) {
    case DType::F32: std::copy_n(static_cast<const float*>(w) + r0 * k, n, out); break;
    case DType::BF16: widen<Bf16Weights>(static_cast<const uint16_t*>(w) + r0 * k, n, out); break;
    case DType::F16: widen<F16Weights>(static_cast<const uint16_t*>(w) + r0 * k, n, out); break;
    case DType::Q8: widen_quantized<BlockQ8, load_q8>(static_cast<const BlockQ8*>(w) + blocks, n, out); break;
    case DType::Q4: widen_quantized<BlockQ4, load_q4>(static_cast<const BlockQ4*>(w) + blocks, n, out); break;
  }
}

// Columns [p0, p0 + kc) of eight rows of length-ld f32 (`rows` of them
// real, zeros for the rest) as [kc][16] at column 8·half of `out`: the
// integer GEMM's 8×8 transpose of 32-bit words moves the floats' bits as
// they are.
void pack_transposed(const float* rows_f32, int64_t ld, int64_t rows, int64_t p0, int64_t kc, int64_t half,
                     float* out) {
  int64_t p = 0;
  for (; p + 8 <= kc; p += 8) {
    __m256i r[8];
    for (int i = 0; i < 8; ++i) {
      r[i] = i < rows ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows_f32 + i * ld + p0 + p))
                      : _mm256_setzero_si256();
    }
    transpose_8x8(r);
    for (int t = 0; t < 8; ++t) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (p + t) * kPackCols + 8 * half), r[t]);
    }
  }
  for (; p < kc; ++p) {
    for (int64_t i = 0; i < 8; ++i) out[p * kPackCols + 8 * half + i] = i < rows ? rows_f32[i * ld + p0 + p] : 0.0f;
  }
}

// Rows [j0, j0+16) of w (those < n; zeros for the rest), widened, as
// [k][16]; `rows_f32` is scratch for eight widened rows.
void pack_group(DType dtype, const void* w, int64_t n, int64_t j0, int64_t k, float* out, float* rows_f32) {
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t r0 = j0 + 8 * half;
    const int64_t rows = std::clamp<int64_t>(n - r0, 0, 8);
    if (rows > 0) widen_rows(dtype, w, r0, rows, k, rows_f32);
    pack_transposed(rows_f32, k, rows, 0, k, half, out);
  }
}

// C[MR, nr] = alpha·A[MR, k]·packed B [k][16] + (first: beta·C, not read
// when beta is 0; else C). A is read by rows (a[i·lda + p]) or, TransA, by
// columns (a[p·lda + i]).
template <int MR, bool TransA>
void micro_kernel(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc, int64_t nr,
                  float alpha, float beta, bool first) {
  __m256 lo[MR], hi[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * kPackCols), b1 = _mm256_loadu_ps(b + p * kPackCols + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(TransA ? a + p * lda + i : a + i * lda + p);
      lo[i] = _mm256_fmadd_ps(av, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(av, b1, hi[i]);
    }
  }
  // Every access to the accumulators is in a fully unrolled loop, so they
  // stay in registers (a loop GCC keeps rolled sends them to the stack on
  // every step of k). A whole tile of C is written from the registers: with
  // k at 64 (attention tiles) the element loop below cost a fifth of a call.
  if (nr == kPackCols) {
    const __m256 scale = _mm256_set1_ps(alpha), keep = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      float* row = c + i * ldc;
      __m256 low = _mm256_mul_ps(lo[i], scale), high = _mm256_mul_ps(hi[i], scale);
      if (!first) {
        low = _mm256_add_ps(_mm256_loadu_ps(row), low);
        high = _mm256_add_ps(_mm256_loadu_ps(row + 8), high);
      } else if (beta != 0.0f) {
        low = _mm256_fmadd_ps(_mm256_loadu_ps(row), keep, low);
        high = _mm256_fmadd_ps(_mm256_loadu_ps(row + 8), keep, high);
      }
      _mm256_storeu_ps(row, low);
      _mm256_storeu_ps(row + 8, high);
    }
    return;
  }
  alignas(32) float out[MR][kPackCols];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    _mm256_store_ps(out[i], lo[i]);
    _mm256_store_ps(out[i] + 8, hi[i]);
  }
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    for (int64_t j = 0; j < nr; ++j) {
      const float product = alpha * out[i][j];
      row[j] = !first ? row[j] + product : beta == 0.0f ? product : product + beta * row[j];
    }
  }
}

using MicroKernel = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, float, float,
                             bool);
template <bool TransA, int... Rows>
constexpr auto micro_kernels(std::integer_sequence<int, Rows...>) {
  return std::array<MicroKernel, sizeof...(Rows)>{micro_kernel<Rows + 1, TransA>...};
}
constexpr auto kMicroKernels = micro_kernels<false>(std::make_integer_sequence<int, kMr>());
constexpr auto kTransposedMicroKernels = micro_kernels<true>(std::make_integer_sequence<int, kMr>());

void axpy(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

template <class Weights>
void axpy_widened(float a, const uint16_t* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, Weights::load8(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * Weights::load1(x + i);
}

void axpy_bf16(float a, const uint16_t* x, float* y, int64_t n) { axpy_widened<Bf16Weights>(a, x, y, n); }
void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) { axpy_widened<F16Weights>(a, x, y, n); }

// e^x as 2^n · e^r (see the AVX-512 path); 2^n is built in the exponent
// bits, so x is first clamped to where expf is finite and non-zero.
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

double exp_shifted(const float* x, float shift, float* out, int64_t n) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    // exp8 clamps -inf to e^-87: masked scores give exactly 0.
    const __m256 live = _mm256_cmp_ps(v, _mm256_set1_ps(-INFINITY), _CMP_NEQ_UQ);
    const __m256 e = _mm256_and_ps(live, exp8(_mm256_sub_ps(v, s)));
    _mm256_storeu_ps(out + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  double sum = 0.0;
  for (float v : lanes) sum += v;
  for (; i < n; ++i) {
    out[i] = std::exp(x[i] - shift);
    sum += out[i];
  }
  return sum;
}

// k is cut into blocks of 256 so that a packed group of B (16 KB) stays in
// L1 while the rows of A stream past it.
constexpr int64_t kKc = 256, kRowBlock = 192;

// The first `n` of eight lanes (none when n ≤ 0), as _mm256_maskload_ps wants them.
inline __m256i lane_mask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void gemm_nt(const float* a, int64_t m, int64_t lda, DType dtype, const void* w, int64_t n, int64_t k, float* c,
             int64_t ldc) {
  const int64_t groups = (n + kPackCols - 1) / kPackCols;
  // Kept by each thread across calls: no allocation per product.
  thread_local std::vector<float> packed, rows_f32;
  packed.resize(static_cast<size_t>(groups * k * kPackCols));
  rows_f32.resize(static_cast<size_t>(8 * k));
  for (int64_t g = 0; g < groups; ++g) {
    pack_group(dtype, w, n, g * kPackCols, k, packed.data() + g * k * kPackCols, rows_f32.data());
  }
  for (int64_t p0 = 0; p0 < k; p0 += kKc) {
    const int64_t kc = std::min(kKc, k - p0);
    for (int64_t g = 0; g < groups; ++g) {
      const float* group = packed.data() + (g * k + p0) * kPackCols;
      const int64_t nr = std::min(kPackCols, n - g * kPackCols);
      for (int64_t i0 = 0; i0 < m; i0 += kMr) {
        const int64_t mr = std::min(kMr, m - i0);
        kMicroKernels[mr - 1](a + i0 * lda + p0, lda, group, kc, c + i0 * ldc + g * kPackCols, ldc, nr, 1.0f, 0.0f,
                              p0 == 0);
      }
    }
  }
}

// The eight horizontal sums of v[0..7], lane j holding v[j]'s.
inline __m256 sums_of_8(const __m256 (&v)[8]) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// C = alpha·A·Bᵀ + beta·C for a few rows of A (a decoding step's query
// heads against a tile of keys): dot products of rows as they lie, eight
// columns at a time reduced together, where packing would transpose all of
// B for a handful of rows (the AVX-512 path's sgemm_few_rows_nt).
void sgemm_few_rows_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    for (int64_t n0 = 0; n0 < N; n0 += 8) {
      const int64_t cols = std::min<int64_t>(8, N - n0);
      __m256 acc[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      // Columns past N repeat the last one (their sums are not stored), so
      // the accumulators stay in registers and whole steps need no masks.
      const float* rows[8];
      for (int j = 0; j < 8; ++j) rows[j] = B + (n0 + std::min<int64_t>(j, cols - 1)) * ldb;
      int64_t k0 = 0;
      for (; k0 + 8 <= K; k0 += 8) {
        const __m256 av = _mm256_loadu_ps(a + k0);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(av, _mm256_loadu_ps(rows[j] + k0), acc[j]);
      }
      if (k0 < K) {
        const __m256i depth = lane_mask8(K - k0);
        const __m256 av = _mm256_maskload_ps(a + k0, depth);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(av, _mm256_maskload_ps(rows[j] + k0, depth), acc[j]);
      }
      const __m256i mask = lane_mask8(cols);
      float* c = C + m * ldc + n0;
      __m256 r = _mm256_mul_ps(sums_of_8(acc), _mm256_set1_ps(alpha));
      if (beta != 0.0f) r = _mm256_fmadd_ps(_mm256_maskload_ps(c, mask), _mm256_set1_ps(beta), r);
      _mm256_maskstore_ps(c, mask, r);
    }
  }
}

// How many vectors of columns sgemm_few_rows_nn takes a pass for Rows rows:
// their sums and one broadcast fill the 16 registers.
template <int Rows>
constexpr int kFewRowsColumnVectors = Rows == 4 ? 3 : 4;

// C = alpha·A·B + beta·C for Rows rows of A (not transposed), B read in
// place a row at a time, 32 columns at once (24 for 4 rows): decoding's
// P·V (B the value tile) without packing the tile for a handful of rows, as
// the AVX-512 path's sgemm_few_rows_nn. B's vectors are FMA memory
// operands, masked loads (Masked) in the last columns when N leaves them
// short.
template <int Rows, bool Masked>
void few_rows_nn_columns(int64_t n0, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                         int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int kVectorsAcross = kFewRowsColumnVectors<Rows>;
  __m256i masks[kVectorsAcross];
  for (int v = 0; v < kVectorsAcross; ++v) masks[v] = lane_mask8(N - n0 - 8 * v);
  __m256 acc[Rows][kVectorsAcross];
#pragma GCC unroll 4
  for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectorsAcross; ++v) acc[i][v] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb + n0;
#pragma GCC unroll 4
    for (int i = 0; i < Rows; ++i) {
      const __m256 av = _mm256_broadcast_ss(A + i * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < kVectorsAcross; ++v) {
        const __m256 bv = Masked ? _mm256_maskload_ps(b + 8 * v, masks[v]) : _mm256_loadu_ps(b + 8 * v);
        acc[i][v] = _mm256_fmadd_ps(av, bv, acc[i][v]);
      }
    }
  }
  const __m256 scale = _mm256_set1_ps(alpha), keep = _mm256_set1_ps(beta);
#pragma GCC unroll 4
  for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectorsAcross; ++v) {
      float* out = C + i * ldc + n0 + 8 * v;
      __m256 r = _mm256_mul_ps(acc[i][v], scale);
      if (beta != 0.0f) r = _mm256_fmadd_ps(_mm256_maskload_ps(out, masks[v]), keep, r);
      _mm256_maskstore_ps(out, masks[v], r);
    }
  }
}

template <int Rows>
void sgemm_few_rows_nn(int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                       float beta, float* C, int64_t ldc) {
  constexpr int64_t kColumns = 8 * kFewRowsColumnVectors<Rows>;
  for (int64_t n0 = 0; n0 < N; n0 += kColumns) {
    (n0 + kColumns <= N ? few_rows_nn_columns<Rows, false> : few_rows_nn_columns<Rows, true>)(
        n0, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

// The same tiles for BLAS's sgemm (attention tiles, training): op(B) is
// packed per block of 256 along k, as it is; rows of A are read where they
// lie, either layout. No allocation per call, where OpenBLAS's small-matrix
// path allocated and freed per attention tile. Up to 4 rows run as dot
// products against Bᵀ and against B read in place.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (K == 0) return sgemm_empty_k(M, N, beta, C, ldc);
  if (trans_b && !trans_a && M <= 4) return sgemm_few_rows_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (!trans_b && !trans_a && M <= 4) {
    static constexpr decltype(&sgemm_few_rows_nn<1>) kFew[] = {sgemm_few_rows_nn<1>, sgemm_few_rows_nn<2>,
                                                               sgemm_few_rows_nn<3>, sgemm_few_rows_nn<4>};
    return kFew[M - 1](N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  const int64_t groups = (N + kPackCols - 1) / kPackCols;
  thread_local std::vector<float> packed;
  packed.resize(static_cast<size_t>(groups * std::min(K, kKc) * kPackCols));
  for (int64_t p0 = 0; p0 < K; p0 += kKc) {
    const int64_t kc = std::min(kKc, K - p0);
    for (int64_t g = 0; g < groups; ++g) {
      float* group = packed.data() + g * kc * kPackCols;
      const int64_t n0 = g * kPackCols, nr = std::min(kPackCols, N - n0);
      if (trans_b) {  // op(B)[p][n] = B[n][p]: rows of B, transposed
        for (int64_t half = 0; half < 2; ++half) {
          const int64_t rows = std::clamp<int64_t>(nr - 8 * half, 0, 8);
          pack_transposed(rows > 0 ? B + (n0 + 8 * half) * ldb : B, ldb, rows, p0, kc, half, group);
        }
      } else {
        const __m256i lo = lane_mask8(nr), hi = lane_mask8(nr - 8);
        for (int64_t p = 0; p < kc; ++p) {
          const float* row = B + (p0 + p) * ldb + n0;
          _mm256_storeu_ps(group + p * kPackCols, _mm256_maskload_ps(row, lo));
          _mm256_storeu_ps(group + p * kPackCols + 8, _mm256_maskload_ps(row + 8, hi));
        }
      }
    }
    // Rows of A a block at a time, so that the block (192 × 256 floats)
    // stays in L2 while the groups of B pass.
    for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
      const int64_t m1 = std::min(M, m0 + kRowBlock);
      for (int64_t g = 0; g < groups; ++g) {
        const float* group = packed.data() + g * kc * kPackCols;
        const int64_t n0 = g * kPackCols, nr = std::min(kPackCols, N - n0);
        for (int64_t i0 = m0; i0 < m1; i0 += kMr) {
          const int64_t mr = std::min(kMr, m1 - i0);
          const float* a = trans_a ? A + p0 * lda + i0 : A + i0 * lda + p0;
          (trans_a ? kTransposedMicroKernels : kMicroKernels)[mr - 1](a, lda, group, kc, C + i0 * ldc + n0, ldc, nr,
                                                                       alpha, beta, p0 == 0);
        }
      }
    }
  }
}

}  // namespace

VectorKernels avx2_kernels() {
  return {dot_f32,
          dot_bf16,
          copy_padded,
          dot_bf16,
          dot_f16,
          widen_bf16,
          widen_f16,
          widen_quantized<BlockQ8, load_q8>,
          widen_quantized<BlockQ4, load_q4>,
          gemm_nt,
          sgemm,
          axpy,
          axpy_bf16,
          axpy_f16,
          silu_mul,
          exp_shifted};
}

QuantGemmKernels avx2_gemm_kernels() {
  return {prepare_x, gemm_of_dtype<Avx2SignStep, Avx2Step>, nullptr, nullptr, nullptr};
}

QuantDotKernels avx2_quant_kernels() {
  return {quantize_x, arranged_bytes, arrange_x, q8_arranged_rows<add_q8_block>, q4_arranged_rows<AddQ4Pair>};
}

}  // namespace slm::cpu
SLM_TARGET_END
#endif
