// Cross-entropy over the vocabulary, a chunk of rows at a time: training's
// loss and gradient, and perplexity's negative log-likelihood.
#include "backend/cpu/backward.h"

#include <slm/error.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace slm::cpu {

double cross_entropy(const float* hidden, int64_t n, const Tensor& lm_head, float softcap, const int32_t* targets,
                     float grad_scale, float* dhidden, float* dlm_head, int64_t chunk_rows) {
  const int64_t V = lm_head.dim(0), H = lm_head.dim(1);
  if (dlm_head && lm_head.dtype() != DType::F32) fail("cross_entropy: a trained lm_head must be f32");
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] >= V) fail("cross_entropy: target ", targets[r], " outside the vocabulary of ", V);
  }
  // By default about 4 MB of logits at a time, and at least 64 rows, so
  // each product with lm_head stays large enough to run at full speed.
  if (chunk_rows <= 0) chunk_rows = std::max<int64_t>(64, (int64_t{1} << 20) / V);
  chunk_rows = std::max<int64_t>(1, std::min(chunk_rows, n));
  std::vector<float> logits(static_cast<size_t>(chunk_rows * V));
  // The capped logits, kept for the cap's derivative 1 − (capped/cap)².
  std::vector<float> capped(softcap > 0 && dhidden ? static_cast<size_t>(chunk_rows * V) : 0);
  const VectorKernels& kernels = vector_kernels();
  double total = 0.0;
  for (int64_t r0 = 0; r0 < n; r0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - r0);
    matmul(hidden + r0 * H, rows, H, lm_head, nullptr, logits.data());
    double chunk_loss = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : chunk_loss)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits.data() + r * V;
      const int32_t target = targets[r0 + r];
      if (target < 0) {
        if (dhidden) std::fill_n(row, V, 0.0f);
        continue;
      }
      if (softcap > 0) {
        for (int64_t c = 0; c < V; ++c) row[c] = softcap * std::tanh(row[c] / softcap);
        if (!capped.empty()) std::copy_n(row, V, capped.data() + r * V);
      }
      float max_logit = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < V; ++c) max_logit = std::max(max_logit, row[c]);
      const float target_logit = row[target];
      // One exp per logit, kept in the row for the gradient.
      const double sum = kernels.exp_shifted(row, max_logit, row, V);
      chunk_loss += max_logit + std::log(sum) - target_logit;
      if (dhidden) {
        // ∂loss/∂logit = softmax − one-hot
        const float scale = static_cast<float>(grad_scale / sum);
        for (int64_t c = 0; c < V; ++c) row[c] *= scale;
        row[target] -= grad_scale;
        if (softcap > 0) {
          const float* cr = capped.data() + r * V;
          for (int64_t c = 0; c < V; ++c) row[c] *= 1.0f - (cr[c] / softcap) * (cr[c] / softcap);
        }
      }
    }
    total += chunk_loss;
    if (dhidden) {
      matmul_backward_input(logits.data(), rows, lm_head, dhidden + r0 * H, false);
      if (dlm_head) matmul_backward_weight(logits.data(), hidden + r0 * H, rows, V, H, dlm_head, true);
    }
  }
  return total;
}


}  // namespace slm::cpu
