#include "backend/cpu/simd.h"

#include <slm/error.h>

#include "core/half.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

namespace slm::cpu {

namespace {

// The portable path: plain loops the compiler may vectorize for the baseline
// target (SSE2 on x86-64, NEON on aarch64).
float scalar_dot_f32(const float* x, const float* w, int64_t k) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < k; ++i) sum += x[i] * w[i];
  return sum;
}

float scalar_dot_bf16(const float* x, const uint16_t* w, int64_t k) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < k; ++i) sum += x[i] * bf16_to_f32(w[i]);
  return sum;
}

float scalar_dot_f16(const float* x, const uint16_t* w, int64_t k) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < k; ++i) sum += x[i] * f16_to_f32(w[i]);
  return sum;
}

float scalar_dot_q8(const float* x, const BlockQ8* w, int64_t k) {
  float sum = 0.0f;
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    float block = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i) block += x[b * kQuantBlock + i] * static_cast<float>(w[b].q[i]);
    sum += block * f16_to_f32(w[b].scale);
  }
  return sum;
}

float scalar_dot_q4(const float* x, const BlockQ4* w, int64_t k) {
  constexpr int64_t half = kQuantBlock / 2;
  float sum = 0.0f;
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    float block = 0.0f;
    for (int i = 0; i < half; ++i) {
      block += xb[i] * static_cast<float>((w[b].q[i] & 0x0f) - 8) + xb[i + half] * static_cast<float>((w[b].q[i] >> 4) - 8);
    }
    sum += block * f16_to_f32(w[b].scale);
  }
  return sum;
}

void scalar_widen_bf16(const uint16_t* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(w[i]);
}

void scalar_widen_f16(const uint16_t* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(w[i]);
}

void copy_padded(const float* x, int64_t k, float* out) {
  std::copy(x, x + k, out);
  std::fill(out + k, out + (k + 31) / 32 * 32, 0.0f);
}

void scalar_axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void scalar_axpy_bf16(float a, const uint16_t* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * bf16_to_f32(x[i]);
}

void scalar_axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * f16_to_f32(x[i]);
}

double scalar_exp_shifted(const float* x, float shift, float* out, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(x[i] - shift);
    sum += out[i];
  }
  return sum;
}

void scalar_silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

Isa detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    const bool dot_products = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
    return dot_products ? Isa::Avx512Bf16 : Isa::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return Isa::Avx2;
#endif
  return Isa::Scalar;
}

Isa parse_isa(std::string_view name) {
  if (name == "scalar") return Isa::Scalar;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  if (name == "avx512bf16") return Isa::Avx512Bf16;
  fail("SLM_CPU_ISA: unknown instruction set \"", name, "\" (expected scalar, avx2, avx512 or avx512bf16)");
}

std::atomic<Isa>& chosen() {
  static std::atomic<Isa> isa = [] {
    const Isa best = detect();
    const char* forced = std::getenv("SLM_CPU_ISA");
    if (!forced || !*forced) return best;
    const Isa wanted = parse_isa(forced);
    return wanted < best ? wanted : best;
  }();
  return isa;
}

}  // namespace

Isa active_isa() { return chosen().load(std::memory_order_relaxed); }

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

void force_isa(Isa isa) {
  const Isa best = detect();
  chosen().store(isa < best ? isa : best, std::memory_order_relaxed);
}

VectorKernels scalar_kernels() {
  return {scalar_dot_f32,
          scalar_dot_bf16,
          copy_padded,
          scalar_dot_bf16,
          scalar_dot_f16,
          scalar_dot_q8,
          scalar_dot_q4,
          scalar_widen_bf16,
          scalar_widen_f16,
          dequantize_q8,
          dequantize_q4,
          scalar_axpy,
          scalar_axpy_bf16,
          scalar_axpy_f16,
          scalar_silu_mul,
          scalar_exp_shifted};
}

// Each table is built on first use of its path only: the function that
// builds it is compiled for that path's instructions, which a CPU without
// them cannot even run to fill a table (an AVX2-only CPU died here).
const VectorKernels& vector_kernels() {
  static const VectorKernels scalar = scalar_kernels();
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Avx512Bf16:
    case Isa::Avx512: {
      static const VectorKernels avx512 = avx512_kernels();
      return avx512;
    }
    case Isa::Avx2: {
      static const VectorKernels avx2 = avx2_kernels();
      return avx2;
    }
    case Isa::Scalar: break;
  }
#endif
  return scalar;
}

const Bf16GemmKernels* bf16_gemm_kernels() {
#if defined(__x86_64__)
  if (active_isa() == Isa::Avx512Bf16) {
    static const Bf16GemmKernels kernels = avx512bf16_kernels();
    return &kernels;
  }
#endif
  return nullptr;
}

const QuantDotKernels* quant_dot_kernels() {
#if defined(__x86_64__)
  if (active_isa() == Isa::Avx512Bf16) {
    static const QuantDotKernels kernels = avx512vnni_kernels();
    return &kernels;
  }
#endif
  return nullptr;
}

}  // namespace slm::cpu
