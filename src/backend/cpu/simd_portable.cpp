// The portable path: plain loops the compiler may vectorize for the baseline
// target (SSE2 on x86-64, NEON on aarch64). Every CPU can run it; it is what
// SLM_CPU_ISA=scalar forces and what a CPU without a path of its own gets,
// and the AVX2 path takes the entries it has no faster version of from here.
#include "backend/cpu/simd.h"

#include "core/half.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace slm::cpu {

namespace {

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

// The integer dot products one block at a time, each block's sum exact in
// int32 and scaled into an f32 total.
float scalar_dot_q8(const void* x_blocks, const BlockQ8* w, int64_t k) {
  const auto* x = static_cast<const BlockQ8*>(x_blocks);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    int32_t block = 0;
    for (int i = 0; i < kQuantBlock; ++i) block += int32_t(x[b].q[i]) * w[b].q[i];
    sum += static_cast<float>(block) * (f16_to_f32(x[b].scale) * f16_to_f32(w[b].scale));
  }
  return sum;
}

float scalar_dot_q4(const void* x_blocks, const BlockQ4* w, int64_t k) {
  const auto* x = static_cast<const BlockQ8*>(x_blocks);
  constexpr int half = kQuantBlock / 2;
  float sum = 0.0f;
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    int32_t block = 0;
    for (int i = 0; i < half; ++i) {
      block += int32_t(x[b].q[i]) * ((w[b].q[i] & 0x0f) - 8) + int32_t(x[b].q[i + half]) * ((w[b].q[i] >> 4) - 8);
    }
    sum += static_cast<float>(block) * (f16_to_f32(x[b].scale) * f16_to_f32(w[b].scale));
  }
  return sum;
}

void scalar_widen_bf16(const uint16_t* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(w[i]);
}

void scalar_widen_f16(const uint16_t* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(w[i]);
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

template <class Block, float (*RowDot)(const void*, const Block*, int64_t)>
void scalar_rows(const void* x, const Block* w, int64_t k, int64_t rows, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = RowDot(x, w + r * (k / kQuantBlock), k);
}

}  // namespace

void copy_padded(const float* x, int64_t k, float* out) {
  std::copy(x, x + k, out);
  std::fill(out + k, out + (k + 31) / 32 * 32, 0.0f);
}

QuantDotKernels portable_quant_kernels() {
  return {quantize_q8, nullptr, nullptr, scalar_rows<BlockQ8, scalar_dot_q8>, scalar_rows<BlockQ4, scalar_dot_q4>};
}

VectorKernels portable_kernels() {
  return {scalar_dot_f32,
          scalar_dot_bf16,
          copy_padded,
          scalar_dot_bf16,
          scalar_dot_f16,
          scalar_widen_bf16,
          scalar_widen_f16,
          dequantize_q8,
          dequantize_q4,
          nullptr,
          nullptr,
          scalar_axpy,
          scalar_axpy_bf16,
          scalar_axpy_f16,
          scalar_silu_mul,
          scalar_exp_shifted};
}

void gemm_nt_reference(const float* a, int64_t m, int64_t lda, DType dtype, const void* w, int64_t n, int64_t k,
                       float* c, int64_t ldc) {
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t j = 0; j < n; ++j) {
    switch (dtype) {
      case DType::F32: std::copy_n(static_cast<const float*>(w) + j * k, k, row.data()); break;
      case DType::BF16: scalar_widen_bf16(static_cast<const uint16_t*>(w) + j * k, k, row.data()); break;
      case DType::F16: scalar_widen_f16(static_cast<const uint16_t*>(w) + j * k, k, row.data()); break;
      case DType::Q8: dequantize_q8(static_cast<const BlockQ8*>(w) + j * (k / kQuantBlock), k, row.data()); break;
      case DType::Q4: dequantize_q4(static_cast<const BlockQ4*>(w) + j * (k / kQuantBlock), k, row.data()); break;
    }
    for (int64_t i = 0; i < m; ++i) c[i * ldc + j] = scalar_dot_f32(a + i * lda, row.data(), k);
  }
}

}  // namespace slm::cpu
