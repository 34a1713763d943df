#include "kernels/cpu/backward.h"
#include "kernels/cpu/flash.h"

#include <slm/error.h>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

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

void rmsnorm_backward(const float* dy, const float* x, const float* weight, float eps, int64_t rows, int64_t dim,
                      float* dx, float* dweight, bool accumulate) {
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
      // ∂L/∂x = rstd · (g·w − x̂ · mean(g·w·x̂)), x̂ = x · rstd
      float dot = 0.0f;
      for (int64_t i = 0; i < dim; ++i) dot += g[i] * weight[i] * xr[i];
      const float correction = dot * rstd * rstd / static_cast<float>(dim);
      if (dweight) {  // before dx, which may overwrite dy
        for (int64_t i = 0; i < dim; ++i) partial[static_cast<size_t>(i)] += g[i] * xr[i] * rstd;
      }
      float* o = dx + r * dim;
      for (int64_t i = 0; i < dim; ++i) {
        const float value = rstd * (g[i] * weight[i] - xr[i] * correction);
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

void embedding_backward(const float* dout, const int32_t* ids, int64_t n, int64_t dim, float* dtable) {
  // Serial over rows: a token may repeat, and the rows are few next to the table.
  for (int64_t r = 0; r < n; ++r) {
    float* row = dtable + static_cast<int64_t>(ids[r]) * dim;
    const float* g = dout + r * dim;
    for (int64_t i = 0; i < dim; ++i) row[i] += g[i];
  }
}

namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

inline void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void attention_train_forward_reference(const float* q, const float* k, const float* v,
                                       const SequenceAttentionShape& s, float* out, float* lse) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(s.seq));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t g = h / group;
        const float* kb = k + b * s.seq * kv_stride + g * hd;
        const float* vb = v + b * s.seq * kv_stride + g * hd;
        for (int64_t i = 0; i < s.seq; ++i) {
          const float* qi = q + (b * s.seq + i) * q_stride + h * hd;
          const int64_t j0 = first_key(i, s.window);
          float max_score = -std::numeric_limits<float>::infinity();
          for (int64_t j = j0; j <= i; ++j) {
            const float score = dot(qi, kb + j * kv_stride, hd) * scale;
            scores[static_cast<size_t>(j)] = score;
            max_score = std::max(max_score, score);
          }
          float* oi = out + (b * s.seq + i) * q_stride + h * hd;
          std::fill_n(oi, hd, 0.0f);
          float total = 0.0f;
          for (int64_t j = j0; j <= i; ++j) {
            const float p = std::exp(scores[static_cast<size_t>(j)] - max_score);
            total += p;
            axpy(p, vb + j * kv_stride, oi, hd);
          }
          const float inv = 1.0f / total;
          for (int64_t d = 0; d < hd; ++d) oi[d] *= inv;
          lse[(b * s.heads + h) * s.seq + i] = max_score + std::log(total);
        }
      }
    }
  }
}

void attention_train_backward_reference(const float* q, const float* k, const float* v, const float* out,
                                        const float* dout, const float* lse, const SequenceAttentionShape& s,
                                        float* dq, float* dk, float* dv) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // One task per (sequence, kv head): it owns the dk/dv rows of that head, so
  // the heads of its group accumulate into them without races.
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t g = 0; g < s.kv_heads; ++g) {
      const int64_t kv_base = b * s.seq * kv_stride + g * hd;
      for (int64_t j = 0; j < s.seq; ++j) {
        std::fill_n(dk + kv_base + j * kv_stride, hd, 0.0f);
        std::fill_n(dv + kv_base + j * kv_stride, hd, 0.0f);
      }
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (int64_t i = 0; i < s.seq; ++i) {
          const int64_t qi_off = (b * s.seq + i) * q_stride + h * hd;
          const float* qi = q + qi_off;
          const float* gi = dout + qi_off;
          float* dqi = dq + qi_off;
          std::fill_n(dqi, hd, 0.0f);
          const float row_lse = lse[(b * s.heads + h) * s.seq + i];
          // Σ_j p_j (dout·v_j) = dout·out: the softmax Jacobian's diagonal correction.
          const float delta = dot(gi, out + qi_off, hd);
          for (int64_t j = first_key(i, s.window); j <= i; ++j) {
            const float* kj = k + kv_base + j * kv_stride;
            const float* vj = v + kv_base + j * kv_stride;
            const float p = std::exp(dot(qi, kj, hd) * scale - row_lse);
            const float dscore = p * (dot(gi, vj, hd) - delta) * scale;
            axpy(dscore, kj, dqi, hd);
            axpy(dscore, qi, dk + kv_base + j * kv_stride, hd);
            axpy(p, gi, dv + kv_base + j * kv_stride, hd);
          }
        }
      }
    }
  }
}

namespace {

constexpr int64_t kQueryTile = 64;
constexpr int64_t kKeyTile = 64;


}  // namespace

void attention_train_forward(const float* q, const float* k, const float* v, const SequenceAttentionShape& s,
                             float* out, float* lse) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t query_tiles = (s.seq + kQueryTile - 1) / kQueryTile;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(kQueryTile * kKeyTile));
    std::vector<float> acc(static_cast<size_t>(kQueryTile * hd));
    std::vector<float> row_max(static_cast<size_t>(kQueryTile)), row_sum(static_cast<size_t>(kQueryTile));
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.heads; ++h) {
        for (int64_t t = 0; t < query_tiles; ++t) {
          const int64_t i0 = t * kQueryTile, ni = std::min(kQueryTile, s.seq - i0);
          const float* qt = q + (b * s.seq + i0) * q_stride + h * hd;
          const float* kb = k + b * s.seq * kv_stride + (h / group) * hd;
          const float* vb = v + b * s.seq * kv_stride + (h / group) * hd;
          std::fill_n(acc.data(), ni * hd, 0.0f);
          std::fill_n(row_max.data(), ni, -std::numeric_limits<float>::infinity());
          std::fill_n(row_sum.data(), ni, 0.0f);
          const int64_t j_begin = first_key(i0, s.window) / kKeyTile * kKeyTile;
          for (int64_t j0 = j_begin; j0 < i0 + ni; j0 += kKeyTile) {
            const int64_t nj = std::min(kKeyTile, i0 + ni - j0);
            flash_tile(qt, q_stride, ni, i0, kb + j0 * kv_stride, vb + j0 * kv_stride, kv_stride, nj, j0, hd, scale,
                       s.window, scores.data(), {acc.data(), row_max.data(), row_sum.data()});
          }
          for (int64_t r = 0; r < ni; ++r) {
            const float inv = 1.0f / row_sum[static_cast<size_t>(r)];
            float* o = out + (b * s.seq + i0 + r) * q_stride + h * hd;
            for (int64_t d = 0; d < hd; ++d) o[d] = acc[static_cast<size_t>(r * hd + d)] * inv;
            lse[(b * s.heads + h) * s.seq + i0 + r] =
                row_max[static_cast<size_t>(r)] + std::log(row_sum[static_cast<size_t>(r)]);
          }
        }
      }
    }
  }
}

void attention_train_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, const SequenceAttentionShape& s, float* dq, float* dk, float* dv) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // One task per (sequence, kv head): it owns the dk/dv rows of that head and
  // the dq rows of its query heads, so nothing is shared between threads.
#pragma omp parallel
  {
    std::vector<float> probs(static_cast<size_t>(kQueryTile * kKeyTile));
    std::vector<float> dprobs(static_cast<size_t>(kQueryTile * kKeyTile));
    std::vector<float> delta(static_cast<size_t>(s.seq));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t g = 0; g < s.kv_heads; ++g) {
        const int64_t kv_base = b * s.seq * kv_stride + g * hd;
        for (int64_t j = 0; j < s.seq; ++j) {
          std::fill_n(dk + kv_base + j * kv_stride, hd, 0.0f);
          std::fill_n(dv + kv_base + j * kv_stride, hd, 0.0f);
        }
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const int64_t q_base = b * s.seq * q_stride + h * hd;
          const float* row_lse = lse + (b * s.heads + h) * s.seq;
          for (int64_t i = 0; i < s.seq; ++i) {
            // Σ_j p_j (dout·v_j) = dout·out: the softmax Jacobian's diagonal term.
            delta[static_cast<size_t>(i)] = dot(dout + q_base + i * q_stride, out + q_base + i * q_stride, hd);
            std::fill_n(dq + q_base + i * q_stride, hd, 0.0f);
          }
          for (int64_t i0 = 0; i0 < s.seq; i0 += kQueryTile) {
            const int64_t ni = std::min(kQueryTile, s.seq - i0);
            const float* qt = q + q_base + i0 * q_stride;
            const float* gt = dout + q_base + i0 * q_stride;
            const int64_t j_begin = first_key(i0, s.window) / kKeyTile * kKeyTile;
            for (int64_t j0 = j_begin; j0 < i0 + ni; j0 += kKeyTile) {
              const int64_t nj = std::min(kKeyTile, i0 + ni - j0);
              const float* kt = k + kv_base + j0 * kv_stride;
              const float* vt = v + kv_base + j0 * kv_stride;
              sgemm(false, true, ni, nj, hd, scale, qt, q_stride, kt, kv_stride, 0.0f, probs.data(), nj);
              sgemm(false, true, ni, nj, hd, 1.0f, gt, q_stride, vt, kv_stride, 0.0f, dprobs.data(), nj);
              for (int64_t r = 0; r < ni; ++r) {
                const int64_t i = i0 + r;
                float* p = probs.data() + r * nj;
                float* dp = dprobs.data() + r * nj;
                for (int64_t c = 0; c < nj; ++c) {
                  p[c] = visible(i, j0 + c, s.window) ? std::exp(p[c] - row_lse[i]) : 0.0f;
                  dp[c] = p[c] * (dp[c] - delta[static_cast<size_t>(i)]) * scale;  // ∂L/∂(q·k)
                }
              }
              sgemm(true, false, nj, hd, ni, 1.0f, probs.data(), nj, gt, q_stride, 1.0f, dv + kv_base + j0 * kv_stride,
                    kv_stride);
              sgemm(false, false, ni, hd, nj, 1.0f, dprobs.data(), nj, kt, kv_stride, 1.0f, dq + q_base + i0 * q_stride,
                    q_stride);
              sgemm(true, false, nj, hd, ni, 1.0f, dprobs.data(), nj, qt, q_stride, 1.0f, dk + kv_base + j0 * kv_stride,
                    kv_stride);
            }
          }
        }
      }
    }
  }
}

double cross_entropy(const float* hidden, int64_t n, const Tensor& lm_head, const int32_t* targets, float grad_scale,
                     float* dhidden, float* dlm_head, int64_t chunk_rows) {
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
