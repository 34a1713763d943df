#include "backend/cpu/kernels.h"

#include <slm/error.h>

#include "core/half.h"
#include "backend/cpu/simd.h"

#include <algorithm>
#include <cmath>

namespace slm::cpu {

void embedding(const Tensor& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t dim = table.dim(1);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t base = static_cast<int64_t>(ids[r]) * dim;
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = table.at(base + i);
  }
}

void rmsnorm(const float* x, const float* weight, float offset, float eps, int64_t rows, int64_t dim, float* out) {
#pragma omp parallel for schedule(static) if (rows > 16)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < dim; ++i) sum += xr[i] * xr[i];
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
    float* o = out + r * dim;
    for (int64_t i = 0; i < dim; ++i) o[i] = xr[i] * scale * (offset + weight[i]);
  }
}

void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos + r * half;
    const float* s = sin + r * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  constexpr int64_t kChunk = 16384;
  const VectorKernels& kernels = vector_kernels();
#pragma omp parallel for schedule(static) if (n > kChunk)
  for (int64_t i = 0; i < n; i += kChunk) kernels.silu_mul(gate + i, up + i, out + i, std::min(kChunk, n - i));
}

void gelu_tanh_mul(const float* gate, const float* up, float* out, int64_t n) {
  constexpr float kC = 0.7978845608028654f;  // √(2/π)
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = 0.5f * g * (1.0f + std::tanh(kC * (g + 0.044715f * g * g * g))) * up[i];
  }
}

void store_row(const float* x, int64_t n, DType dtype, void* table, int64_t row) {
  switch (dtype) {
    case DType::F32: std::copy_n(x, n, static_cast<float*>(table) + row * n); break;
    case DType::BF16: {
      uint16_t* out = static_cast<uint16_t*>(table) + row * n;
      for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(x[i]);
      break;
    }
    case DType::F16: {
      uint16_t* out = static_cast<uint16_t*>(table) + row * n;
      for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
      break;
    }
    case DType::Q8:
    case DType::Q4: fail("store_row: quantized tables are not supported");
  }
}

void add_inplace(float* x, const float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void scale_inplace(float* x, float s, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void softcap_inplace(float* x, float cap, int64_t n) {
  const float inv = 1.0f / cap;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

}  // namespace slm::cpu
