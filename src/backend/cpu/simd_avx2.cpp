// AVX2 + FMA + F16C path. Compiled for that target whatever the build's
// baseline; only called when the CPU reports the features.
#if defined(__x86_64__)
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <immintrin.h>

#include <cmath>

// Everything below, and nothing included above, is compiled for this target:
// a header compiled under it could leak these instructions into other files.
#pragma GCC target("avx2,fma,f16c")

#include "backend/cpu/simd_x86_inline.h"

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

void copy_padded(const float* x, int64_t k, float* out) {
  int64_t i = 0;
  for (; i < k; ++i) out[i] = x[i];
  for (; i % 32; ++i) out[i] = 0.0f;
}

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
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
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

}  // namespace

VectorKernels avx2_kernels() {
  // Quantized rows use the portable loops on this path.
  const VectorKernels portable = portable_kernels();
  return {dot_f32,
          dot_bf16,
          copy_padded,
          dot_bf16,
          dot_f16,
          portable.q8,
          portable.q4,
          widen_bf16,
          widen_f16,
          portable.widen_q8,
          portable.widen_q4,
          axpy,
          axpy_bf16,
          axpy_f16,
          silu_mul,
          exp_shifted};
}

}  // namespace slm::cpu
#endif
