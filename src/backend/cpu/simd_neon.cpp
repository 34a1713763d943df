// AArch64 paths: NEON (Advanced SIMD, which every AArch64 CPU has) and, on
// CPUs with the dot-product extension (ARMv8.2 ASIMDDP), SDOT for the q8/q4
// dot products. The SDOT functions alone are compiled for +dotprod, so one
// binary runs on every AArch64 CPU; simd.cpp calls them only when the CPU
// reports the feature.
#if defined(__aarch64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <arm_neon.h>

#include <cmath>

namespace slm::cpu {

namespace {

// Loaders widen four weights to f32: one struct per weight dtype, so the
// templated loops below are instantiated for each. f16 widening is FCVTL,
// part of base AArch64 (the FP16 extension adds only half arithmetic).
struct F32Weights {
  static float32x4_t load4(const float* w) { return vld1q_f32(w); }
  static float load1(const float* w) { return *w; }
};

struct Bf16Weights {
  static float32x4_t load4(const uint16_t* w) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(w), 16)); }
  static float load1(const uint16_t* w) { return bf16_to_f32(*w); }
};

struct F16Weights {
  static float32x4_t load4(const uint16_t* w) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w))); }
  static float load1(const uint16_t* w) { return f16_to_f32(*w); }
};

// Four independent accumulators hide the FMA latency; the tail is scalar.
template <class Weights, class W>
float dot(const float* x, const W* w, int64_t k) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    a0 = vfmaq_f32(a0, vld1q_f32(x + i), Weights::load4(w + i));
    a1 = vfmaq_f32(a1, vld1q_f32(x + i + 4), Weights::load4(w + i + 4));
    a2 = vfmaq_f32(a2, vld1q_f32(x + i + 8), Weights::load4(w + i + 8));
    a3 = vfmaq_f32(a3, vld1q_f32(x + i + 12), Weights::load4(w + i + 12));
  }
  for (; i + 4 <= k; i += 4) a0 = vfmaq_f32(a0, vld1q_f32(x + i), Weights::load4(w + i));
  float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
  for (; i < k; ++i) sum += x[i] * Weights::load1(w + i);
  return sum;
}

float dot_f32(const float* x, const float* w, int64_t k) { return dot<F32Weights>(x, w, k); }
float dot_bf16(const float* x, const uint16_t* w, int64_t k) { return dot<Bf16Weights>(x, w, k); }
float dot_f16(const float* x, const uint16_t* w, int64_t k) { return dot<F16Weights>(x, w, k); }

template <class Weights>
void widen(const uint16_t* w, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, Weights::load4(w + i));
  for (; i < n; ++i) out[i] = Weights::load1(w + i);
}

void widen_bf16(const uint16_t* w, int64_t n, float* out) { widen<Bf16Weights>(w, n, out); }
void widen_f16(const uint16_t* w, int64_t n, float* out) { widen<F16Weights>(w, n, out); }

template <class Weights, class W>
void axpy_widened(float a, const W* x, float* y, int64_t n) {
  const float32x4_t va = vdupq_n_f32(a);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, Weights::load4(x + i)));
  for (; i < n; ++i) y[i] += a * Weights::load1(x + i);
}

void axpy(float a, const float* x, float* y, int64_t n) { axpy_widened<F32Weights>(a, x, y, n); }
void axpy_bf16(float a, const uint16_t* x, float* y, int64_t n) { axpy_widened<Bf16Weights>(a, x, y, n); }
void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) { axpy_widened<F16Weights>(a, x, y, n); }

// e^x for four lanes: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts, so
// r is exact), a degree-6 polynomial for e^r, and 2^n built in the exponent
// bits. x is clamped to [-87, 88], where 2^n stays a normal float.
inline float32x4_t exp4(float32x4_t x) {
  x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.0f)), vdupq_n_f32(-87.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.0f / 720);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t scale = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(scale));
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t g = vld1q_f32(gate + i);
    const float32x4_t sig = vdivq_f32(one, vaddq_f32(one, exp4(vnegq_f32(g))));
    vst1q_f32(out + i, vmulq_f32(vmulq_f32(g, sig), vld1q_f32(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

double exp_shifted(const float* x, float shift, float* out, int64_t n) {
  const float32x4_t s = vdupq_n_f32(shift);
  const float32x4_t minus_inf = vdupq_n_f32(-INFINITY);
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    // exp4 clamps -inf to e^-87: masked scores give exactly 0.
    const uint32x4_t masked = vceqq_f32(v, minus_inf);
    const float32x4_t e = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(exp4(vsubq_f32(v, s))), masked));
    vst1q_f32(out + i, e);
    acc = vaddq_f32(acc, e);
  }
  double sum = 0.0;
  for (int lane = 0; lane < 4; ++lane) sum += acc[lane];
  for (; i < n; ++i) {
    out[i] = std::exp(x[i] - shift);
    sum += out[i];
  }
  return sum;
}

// The 32 weights of a q4 block as signed bytes in order: the low nibbles are
// elements 0..15, the high ones 16..31, each stored plus 8.
inline void unpack_q4(const BlockQ4& w, int8x16_t& lo, int8x16_t& hi) {
  const uint8x16_t packed = vld1q_u8(w.q);
  const int8x16_t eight = vdupq_n_s8(8);
  lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0f))), eight);
  hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
}

// Σ x·w over 32 bytes in base NEON: widening multiplies to int16 (each
// product fits), pairwise-added into int32 lanes. Exact.
inline int32_t block_sum_neon(const int8_t* x, int8x16_t w0, int8x16_t w1) {
  const int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
  int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(x0), vget_low_s8(w0)));
  acc = vpadalq_s16(acc, vmull_high_s8(x0, w0));
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x1), vget_low_s8(w1)));
  acc = vpadalq_s16(acc, vmull_high_s8(x1, w1));
  return vaddvq_s32(acc);
}

// Σ x·w over 32 bytes with SDOT: four bytes per lane in one instruction.
__attribute__((target("arch=armv8.2-a+dotprod"))) inline int32_t block_sum_dot(const int8_t* x, int8x16_t w0, int8x16_t w1) {
  int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(x), w0);
  acc = vdotq_s32(acc, vld1q_s8(x + 16), w1);
  return vaddvq_s32(acc);
}

struct Q8Weights {
  using Block = BlockQ8;
  static void load(const BlockQ8& w, int8x16_t& w0, int8x16_t& w1) {
    w0 = vld1q_s8(w.q);
    w1 = vld1q_s8(w.q + 16);
  }
};

struct Q4Weights {
  using Block = BlockQ4;
  static void load(const BlockQ4& w, int8x16_t& w0, int8x16_t& w1) { unpack_q4(w, w0, w1); }
};

// Each block's integer sum is exact; the product of the two scales
// multiplies it into the f32 total, as the portable loop does. Always
// inlined, so that it takes the target of the SDOT functions below.
template <class Weights, int32_t (*BlockSum)(const int8_t*, int8x16_t, int8x16_t)>
[[gnu::always_inline]] inline float quantized_row_dot(const void* x_blocks, const typename Weights::Block* w, int64_t k) {
  const auto* x = static_cast<const BlockQ8*>(x_blocks);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    int8x16_t w0, w1;
    Weights::load(w[b], w0, w1);
    sum += static_cast<float>(BlockSum(x[b].q, w0, w1)) * (f16_to_f32(x[b].scale) * f16_to_f32(w[b].scale));
  }
  return sum;
}

template <class Weights, int32_t (*BlockSum)(const int8_t*, int8x16_t, int8x16_t)>
[[gnu::always_inline]] inline void quantized_rows(const void* x, const typename Weights::Block* w, int64_t k,
                                                  int64_t rows, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = quantized_row_dot<Weights, BlockSum>(x, w + r * (k / kQuantBlock), k);
}

// NEON's widening multiplies, and the loops for SDOT compiled for it
// (ARMv8.2, where it was added).
void dot_q8_neon(const void* x, const BlockQ8* w, int64_t k, int64_t rows, float* out) {
  quantized_rows<Q8Weights, block_sum_neon>(x, w, k, rows, out);
}
void dot_q4_neon(const void* x, const BlockQ4* w, int64_t k, int64_t rows, float* out) {
  quantized_rows<Q4Weights, block_sum_neon>(x, w, k, rows, out);
}
__attribute__((target("arch=armv8.2-a+dotprod"))) void dot_q8_sdot(const void* x, const BlockQ8* w, int64_t k,
                                                                   int64_t rows, float* out) {
  quantized_rows<Q8Weights, block_sum_dot>(x, w, k, rows, out);
}
__attribute__((target("arch=armv8.2-a+dotprod"))) void dot_q4_sdot(const void* x, const BlockQ4* w, int64_t k,
                                                                   int64_t rows, float* out) {
  quantized_rows<Q4Weights, block_sum_dot>(x, w, k, rows, out);
}

}  // namespace

// The portable path's entries where NEON has nothing faster (x copied for
// bf16_prepared, q8/q4 widening) or OpenBLAS serves (the GEMMs).
VectorKernels neon_kernels() {
  VectorKernels k = portable_kernels();
  k.f32 = dot_f32;
  k.bf16 = dot_bf16;
  k.bf16_prepared = dot_bf16;
  k.f16 = dot_f16;
  k.widen_bf16 = widen_bf16;
  k.widen_f16 = widen_f16;
  k.axpy = axpy;
  k.axpy_bf16 = axpy_bf16;
  k.axpy_f16 = axpy_f16;
  k.silu_mul = silu_mul;
  k.exp_shifted = exp_shifted;
  return k;
}

QuantDotKernels neon_quant_kernels() {
  return {quantize_q8, nullptr, nullptr, dot_q8_neon, dot_q4_neon};
}

QuantDotKernels neon_dotprod_kernels() { return {quantize_q8, nullptr, nullptr, dot_q8_sdot, dot_q4_sdot}; }

}  // namespace slm::cpu
#endif
