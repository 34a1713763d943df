#include "backend/cpu/backward.h"
#include "backend/cpu/flash.h"

#include <slm/error.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/simd.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace slm::cpu {

namespace {

// Column blocks of W for dx = dy·W: a multiple of the quantization block, so
// every block of a q8/q4 row widens on its own.
constexpr int64_t kColumnBlock = 64;
constexpr int64_t kPanelRows = 64;

// W[:, k0:k0+width] as f32 [N, width].
void widen_columns(const VectorKernels& kernels, const Tensor& W, int64_t k0, int64_t width, float* out) {
  const int64_t N = W.dim(0), K = W.dim(1);
  for (int64_t n = 0; n < N; ++n) {
    float* o = out + n * width;
    switch (W.dtype()) {
      case DType::F32: std::copy_n(W.data_as<const float>() + n * K + k0, width, o); break;
      case DType::BF16: kernels.widen_bf16(W.data_as<const uint16_t>() + n * K + k0, width, o); break;
      case DType::F16: kernels.widen_f16(W.data_as<const uint16_t>() + n * K + k0, width, o); break;
      case DType::Q8:
        kernels.widen_q8(W.data_as<const BlockQ8>() + (n * K + k0) / kQuantBlock, width, o);
        break;
      case DType::Q4:
        kernels.widen_q4(W.data_as<const BlockQ4>() + (n * K + k0) / kQuantBlock, width, o);
        break;
    }
  }
}

}  // namespace

void matmul_backward_input(const float* dy, int64_t M, const Tensor& W, float* dx, bool accumulate) {
  if (W.rank() != 2) fail("matmul_backward_input: weight of shape ", W.shape_string(), " is not a matrix");
  const int64_t N = W.dim(0), K = W.dim(1);
  if (W.dtype() == DType::BF16) {
    if (const Bf16GemmKernels* bf16 = bf16_gemm_kernels()) {
      // W read as the [N][K] right-hand operand of dy·W: no transposed copy.
      const Bf16Operand operand{W.data_as<const uint16_t>(), K, Bf16Layout::KN, K, nullptr, dx};
      bf16_gemm_parallel(*bf16, dy, M, N, {&operand, 1}, accumulate);
      return;
    }
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  const int64_t blocks = (K + kColumnBlock - 1) / kColumnBlock;
  const VectorKernels& kernels = vector_kernels();
#pragma omp parallel
  {
    std::vector<float> widened;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * kColumnBlock;
      const int64_t width = std::min(kColumnBlock, K - k0);
      const float* panel;
      int64_t ldb;
      if (W.dtype() == DType::F32) {
        panel = W.data_as<const float>() + k0;
        ldb = K;
      } else {
        widened.resize(static_cast<size_t>(N * width));
        widen_columns(kernels, W, k0, width, widened.data());
        panel = widened.data();
        ldb = width;
      }
      sgemm(false, false, M, width, N, 1.0f, dy, N, panel, ldb, beta, dx + k0, K);
    }
  }
}

void matmul_backward_weight(const float* dy, const float* x, int64_t M, int64_t N, int64_t K, float* dW,
                            bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  const int64_t panels = (N + kPanelRows - 1) / kPanelRows;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kPanelRows;
    const int64_t rows = std::min(kPanelRows, N - n0);
    sgemm(true, false, rows, K, M, 1.0f, dy + n0, N, x, K, beta, dW + n0 * K, K);
  }
}

void bias_backward(const float* dy, int64_t M, int64_t N, float* dbias) {
  for (int64_t m = 0; m < M; ++m) {
    const float* row = dy + m * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) dbias[n] += row[n];
  }
}

void rmsnorm_backward(const float* dy, const float* x, const float* weight, float offset, float eps, int64_t rows,
                      int64_t dim, float* dx, float* dweight, bool accumulate) {
#pragma omp parallel
  {
    std::vector<float> partial(dweight ? static_cast<size_t>(dim) : 0, 0.0f);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      const float* g = dy + r * dim;
      float sum_sq = 0.0f;
      for (int64_t i = 0; i < dim; ++i) sum_sq += xr[i] * xr[i];
      const float rstd = 1.0f / std::sqrt(sum_sq / static_cast<float>(dim) + eps);
      // ∂L/∂x = rstd · (g·w − x̂ · mean(g·w·x̂)), x̂ = x · rstd, w = offset + weight
      float dot = 0.0f;
      for (int64_t i = 0; i < dim; ++i) dot += g[i] * (offset + weight[i]) * xr[i];
      const float correction = dot * rstd * rstd / static_cast<float>(dim);
      if (dweight) {  // before dx, which may overwrite dy
        for (int64_t i = 0; i < dim; ++i) partial[static_cast<size_t>(i)] += g[i] * xr[i] * rstd;
      }
      float* o = dx + r * dim;
      for (int64_t i = 0; i < dim; ++i) {
        const float value = rstd * (g[i] * (offset + weight[i]) - xr[i] * correction);
        o[i] = accumulate ? o[i] + value : value;
      }
    }
    if (dweight) {
#pragma omp critical
      for (int64_t i = 0; i < dim; ++i) dweight[i] += partial[static_cast<size_t>(i)];
    }
  }
}

void rope_backward(float* dx, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (rows > 16)
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos + r * half;
    const float* s = sin + r * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* g = dx + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float ga = g[i];
        const float gb = g[i + half];
        g[i] = ga * c[i] + gb * s[i];
        g[i + half] = gb * c[i] - ga * s[i];
      }
    }
  }
}

void silu_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float sig = 1.0f / (1.0f + std::exp(-g));
    const float d = dout[i];
    const float u = up[i];
    dup[i] = d * g * sig;
    dgate[i] = d * u * sig * (1.0f + g * (1.0f - sig));
  }
}

void gelu_tanh_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                            int64_t n) {
  constexpr float kC = 0.7978845608028654f;  // √(2/π)
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float t = std::tanh(kC * (g + 0.044715f * g * g * g));
    const float gelu = 0.5f * g * (1.0f + t);
    // d gelu/dg = ½(1 + t) + ½ g (1 − t²) · c (1 + 3·0.044715 g²)
    const float dgelu = 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * kC * (1.0f + 3.0f * 0.044715f * g * g);
    const float d = dout[i];
    const float u = up[i];
    dup[i] = d * gelu;
    dgate[i] = d * u * dgelu;
  }
}

void embedding_backward(const float* dout, const int32_t* ids, int64_t n, int64_t dim, float* dtable) {
  // Serial over rows: a token may repeat, and the rows are few next to the table.
  for (int64_t r = 0; r < n; ++r) {
    float* row = dtable + static_cast<int64_t>(ids[r]) * dim;
    const float* g = dout + r * dim;
    for (int64_t i = 0; i < dim; ++i) row[i] += g[i];
  }
}

}  // namespace slm::cpu
