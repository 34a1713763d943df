// Attention over whole sequences, as training runs it: the forward saves each
// row's logsumexp, and the backward recomputes the probabilities from it tile
// by tile (flash-attention style), so memory stays linear in the length.
#include "backend/cpu/backward.h"
#include "backend/cpu/flash.h"

#include "backend/cpu/kernels.h"
#include "backend/cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace slm::cpu {

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

// d soft_cap(s)/ds from the capped score c: 1 − (c/cap)² (1 without a cap).
inline float cap_derivative(float capped, float cap) { return cap > 0 ? 1.0f - (capped / cap) * (capped / cap) : 1.0f; }

}  // namespace

void attention_train_forward_reference(const float* q, const float* k, const float* v,
                                       const SequenceAttentionShape& s, float* out, float* lse) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
  const float scale = score_scale(s.scale, hd);
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
            const float score = soft_cap(dot(qi, kb + j * kv_stride, hd) * scale, s.softcap);
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
  const float scale = score_scale(s.scale, hd);
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
            const float score = soft_cap(dot(qi, kj, hd) * scale, s.softcap);
            const float p = std::exp(score - row_lse);
            const float dscore = p * (dot(gi, vj, hd) - delta) * cap_derivative(score, s.softcap) * scale;
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
static_assert(kQueryTile <= kMaxTileQueries);


}  // namespace

void attention_train_forward(const float* q, const float* k, const float* v, const SequenceAttentionShape& s,
                             float* out, float* lse) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
  const float scale = score_scale(s.scale, hd);
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
            flash_tile(qt, q_stride, ni, 1, i0, kb + j0 * kv_stride, vb + j0 * kv_stride, kv_stride, nj, j0, hd, scale,
                       s.softcap, s.window, scores.data(), {acc.data(), row_max.data(), row_sum.data()});
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
  const float scale = score_scale(s.scale, hd);
  const VectorKernels& kernels = vector_kernels();
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
                // ∂L/∂(q·k) = p·(dp − δ)·cap'(score)·scale: the factor beside p
                // while the capped scores are at hand, then p in one vector pass.
                for (int64_t c = 0; c < nj; ++c) {
                  const float score = soft_cap(p[c], s.softcap);
                  dp[c] = (dp[c] - delta[static_cast<size_t>(i)]) * cap_derivative(score, s.softcap) * scale;
                  p[c] = visible(i, j0 + c, s.window) ? score : -std::numeric_limits<float>::infinity();
                }
                kernels.exp_shifted(p, row_lse[i], p, nj);
                for (int64_t c = 0; c < nj; ++c) dp[c] *= p[c];
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

}  // namespace slm::cpu
