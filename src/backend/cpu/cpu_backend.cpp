// The CPU backend: the Backend interface over the kernels of this folder,
// with OpenMP as the thread pool.
#include "backend/backend.h"

#include "backend/cpu/backward.h"
#include "backend/cpu/kernels.h"

#include <slm/random.h>

#include <cmath>
#include <cstring>

namespace slm {

namespace {

// Calls keep(i) for each input element dropout keeps and drop(i) for the
// others (i = row · in + column). Each row of the mask is drawn from its own
// generator, so rows go to threads freely and backward draws the same mask
// again from the same seed. One 64-bit draw decides four elements, each
// dropped when its 16 bits fall below p·2^16 (p to within 2^-17): the
// generator was a tenth of a training step when every element took a draw.
template <typename Keep, typename Drop>
void for_each_mask_row(int64_t M, int64_t in, const LoraDropout& dropout, Keep keep, Drop drop) {
  const auto threshold = static_cast<uint64_t>(std::llround(dropout.p * 65536.0));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    Rng rng(mix_seed(dropout.seed, static_cast<uint64_t>(r)));
    uint64_t bits = 0;
    for (int64_t i = 0; i < in; ++i) {
      if (i % 4 == 0) bits = rng.next();
      if ((bits & 0xffff) < threshold) {
        drop(r * in + i);
      } else {
        keep(r * in + i);
      }
      bits >>= 16;
    }
  }
}

// x with dropout applied, at the start of scratch (or x itself when p = 0).
const float* dropped_input(const float* x, int64_t M, int64_t in, const LoraDropout& dropout,
                           std::vector<float>& scratch) {
  if (dropout.p <= 0.0) return x;
  if (scratch.size() < static_cast<size_t>(M * in)) scratch.resize(static_cast<size_t>(M * in));
  float* out = scratch.data();
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout.p));
  for_each_mask_row(
      M, in, dropout, [&](int64_t i) { out[i] = x[i] * keep_scale; }, [&](int64_t i) { out[i] = 0.0f; });
  return out;
}

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  std::string_view name() const override { return "cpu"; }

  void matmul(const float* x, int64_t M, int64_t K, const Tensor& W, const float* bias, float* y) const override {
    cpu::matmul(x, M, K, W, bias, y);
  }
  void matmul_group(const float* x, int64_t M, int64_t K, std::span<const Projection> projections) const override {
    cpu::matmul_group(x, M, K, projections);
  }

  void lora_forward(const float* x, int64_t M, const LoraWeights& w, const LoraDropout& dropout, float* u, float* y,
                    std::vector<float>& scratch) const override {
    cpu::low_rank_add(dropped_input(x, M, w.A.dim(1), dropout, scratch), M, w.A, w.B, w.scale, u, y);
  }

  void lora_backward(const float* x, const float* u, const float* dy, int64_t M, const LoraWeights& w,
                     const LoraDropout& dropout, LoraWeights& grad, float* dx,
                     std::vector<float>& scratch) const override {
    // dB += scale · dyᵀ·u ; du = scale · dy·B ; dA += duᵀ·xd ; dx += (du·A) ⊙ dropout mask
    // scratch: the dropped input (then du·A) [M, in], and du [M, rank].
    const int64_t in = w.A.dim(1), out = w.B.dim(0), rank = w.rank();
    scratch.resize(static_cast<size_t>(M * (in + rank)));
    float* du = scratch.data() + M * in;
    cpu::sgemm_parallel(true, false, out, rank, M, w.scale, dy, out, u, rank, 1.0f, grad.B.data_as<float>(), rank);
    cpu::sgemm_parallel(false, false, M, rank, out, w.scale, dy, out, w.B.data_as<const float>(), rank, 0.0f, du,
                        rank);
    const float* xd = dropped_input(x, M, in, dropout, scratch);
    cpu::sgemm_parallel(true, false, rank, in, M, 1.0f, du, rank, xd, in, 1.0f, grad.A.data_as<float>(), in);
    if (dropout.p <= 0.0) {
      cpu::sgemm_parallel(false, false, M, in, rank, 1.0f, du, rank, w.A.data_as<const float>(), in, 1.0f, dx, in);
      return;
    }
    // ∂xd/∂x = mask / (1−p): du·A goes to the scratch (xd is no longer
    // needed), then through the mask forward drew.
    float* dxd = scratch.data();
    cpu::sgemm_parallel(false, false, M, in, rank, 1.0f, du, rank, w.A.data_as<const float>(), in, 0.0f, dxd, in);
    const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout.p));
    for_each_mask_row(M, in, dropout, [&](int64_t i) { dx[i] += dxd[i] * keep_scale; }, [](int64_t) {});
  }

  void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) const override {
    cpu::sgemm_parallel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void matmul_backward_input(const float* dy, int64_t M, const Tensor& W, float* dx, bool accumulate) const override {
    cpu::matmul_backward_input(dy, M, W, dx, accumulate);
  }
  void matmul_backward_weight(const float* dy, const float* x, int64_t M, int64_t N, int64_t K, float* dW,
                              bool accumulate) const override {
    cpu::matmul_backward_weight(dy, x, M, N, K, dW, accumulate);
  }
  void bias_backward(const float* dy, int64_t M, int64_t N, float* dbias) const override {
    cpu::bias_backward(dy, M, N, dbias);
  }

  void embedding(const Tensor& table, const int32_t* ids, int64_t n, float* out) const override {
    cpu::embedding(table, ids, n, out);
  }
  void embedding_backward(const float* dout, const int32_t* ids, int64_t n, int64_t dim, float* dtable) const override {
    cpu::embedding_backward(dout, ids, n, dim, dtable);
  }
  void rmsnorm(const float* x, const float* weight, float offset, float eps, int64_t rows, int64_t dim,
               float* out) const override {
    cpu::rmsnorm(x, weight, offset, eps, rows, dim, out);
  }
  void rmsnorm_backward(const float* dy, const float* x, const float* weight, float offset, float eps, int64_t rows,
                        int64_t dim, float* dx, float* dweight, bool accumulate) const override {
    cpu::rmsnorm_backward(dy, x, weight, offset, eps, rows, dim, dx, dweight, accumulate);
  }
  void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin) const override {
    cpu::rope(x, rows, heads, head_dim, cos, sin);
  }
  void rope_backward(float* dx, int64_t rows, int64_t heads, int64_t head_dim, const float* cos,
                     const float* sin) const override {
    cpu::rope_backward(dx, rows, heads, head_dim, cos, sin);
  }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) const override {
    cpu::silu_mul(gate, up, out, n);
  }
  void silu_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                         int64_t n) const override {
    cpu::silu_mul_backward(gate, up, dout, dgate, dup, n);
  }
  void gelu_tanh_mul(const float* gate, const float* up, float* out, int64_t n) const override {
    cpu::gelu_tanh_mul(gate, up, out, n);
  }
  void gelu_tanh_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                              int64_t n) const override {
    cpu::gelu_tanh_mul_backward(gate, up, dout, dgate, dup, n);
  }
  void add_inplace(float* x, const float* y, int64_t n) const override { cpu::add_inplace(x, y, n); }
  void scale_inplace(float* x, float s, int64_t n) const override { cpu::scale_inplace(x, s, n); }
  void softcap_inplace(float* x, float cap, int64_t n) const override { cpu::softcap_inplace(x, cap, n); }

  void store_kv(const float* k, const float* v, std::span<const AttentionRun> runs,
                const PagedKV& cache) const override {
    cpu::store_kv(k, v, runs, cache);
  }
  void attention_eager(const float* q, const PagedKV& cache, const AttentionBatch& batch, float* out,
                       std::vector<float>& scores) const override {
    cpu::attention_eager(q, cache, batch, scores, out);
  }
  void attention_flash(const float* q, const PagedKV& cache, const AttentionBatch& batch, float* out) const override {
    cpu::attention_flash(q, cache, batch, out);
  }
  void attention_train_forward(const float* q, const float* k, const float* v, const SequenceAttentionShape& shape,
                               float* out, float* lse) const override {
    cpu::attention_train_forward(q, k, v, shape, out, lse);
  }
  void attention_train_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                                const float* lse, const SequenceAttentionShape& shape, float* dq, float* dk,
                                float* dv) const override {
    cpu::attention_train_backward(q, k, v, out, dout, lse, shape, dq, dk, dv);
  }

  double cross_entropy(const float* hidden, int64_t n, const Tensor& lm_head, float softcap, const int32_t* targets,
                       float grad_scale, float* dhidden, float* dlm_head) const override {
    return cpu::cross_entropy(hidden, n, lm_head, softcap, targets, grad_scale, dhidden, dlm_head);
  }

  double sum_of_squares(const float* x, int64_t n) const override {
    // Fixed blocks summed in order, so the result does not depend on how the
    // threads share the work (resumed runs stay bit-identical).
    constexpr int64_t kBlock = 1 << 14;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
      double sum = 0.0;
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) sum += static_cast<double>(x[i]) * x[i];
      partial[static_cast<size_t>(b)] = sum;
    }
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
  }

  void adamw(float* w, float* g, float* m, float* v, int64_t n, const AdamWStep& s) const override {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i] * s.clip;
      w[i] *= s.decay;
      m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * gi;
      v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * gi * gi;
      w[i] -= s.step_size * m[i] / (std::sqrt(v[i]) / s.bias2_sqrt + s.eps);
      g[i] = 0.0f;
    }
  }
};

}  // namespace

namespace cpu {
const Backend& backend() {
  static const CpuBackend instance;
  return instance;
}
}  // namespace cpu

}  // namespace slm
