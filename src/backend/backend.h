// The operations a decoder needs, behind one interface per device (the CPU
// today; a CUDA backend adds files, not changes). The decoder and the trainer
// call only these; each backend implements them over memory of its device.
// Activations and gradients are f32, row-major; weights may be any DType and
// are accumulated in f32. Pointers are memory of the backend's device.
#pragma once

#include <slm/adapter.h>
#include <slm/tensor.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

// One of several products of the same input (q/k/v, gate/up).
struct Projection {
  const Tensor* weight;
  const float* bias;  // may be null
  float* out;
};

// One layer's keys and values in the paged KV cache: block b of head g holds
// block_tokens rows of head_dim values at element ((b·kv_heads + g)·block_tokens)·head_dim.
struct PagedKV {
  void* keys;
  void* values;
  DType dtype;
  int64_t block_tokens;
  int64_t kv_heads;
  int64_t head_dim;
};

// The query rows of one sequence in a batch: rows [row0, row0 + n_queries)
// at positions [q_start, q_start + n_queries), seeing keys [0, q_start +
// n_queries) through its block table. work_begin is the backend's own.
struct AttentionRun {
  int64_t row0;
  int64_t n_queries;
  int64_t q_start;
  const int32_t* block_table;
  int64_t work_begin = 0;
};

// Attention of a batch: q and out [rows, heads·head_dim]; causal, and with
// window > 0 a query at i sees keys j with i − j < window. Scores are
// scale·q·k (scale 0: 1/√head_dim), then with softcap > 0 softcap·tanh(score/softcap).
struct AttentionBatch {
  std::span<AttentionRun> runs;
  int64_t heads;
  int64_t window;
  float scale = 0.0f;
  float softcap = 0.0f;
};

// Causal (optionally windowed) grouped-query attention over `batch`
// sequences of `seq` tokens each, as training runs it. q [batch·seq,
// heads·head_dim], k and v [batch·seq, kv_heads·head_dim], lse [batch,
// heads, seq] (log of each row's softmax denominator, in scaled scores).
struct SequenceAttentionShape {
  int64_t batch;
  int64_t seq;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  int64_t window;  // 0: full causal attention
  float scale = 0.0f;    // as AttentionBatch's
  float softcap = 0.0f;
};

// LoRA dropout (PEFT's lora_dropout on the adapter's input): elements are
// dropped with probability p and kept scaled by 1/(1−p), the mask drawn from
// `seed` so backward draws it again instead of storing it.
struct LoraDropout {
  double p = 0.0;
  uint64_t seed = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string_view name() const = 0;

  // ---- linear layers ----
  // y[M,N] = x[M,K] · W[N,K]ᵀ (+ bias[N] when not null).
  virtual void matmul(const float* x, int64_t M, int64_t K, const Tensor& W, const float* bias, float* y) const = 0;
  // Several products of one input in one pass over the threads.
  virtual void matmul_group(const float* x, int64_t M, int64_t K, std::span<const Projection> projections) const = 0;
  // y[M, out] += scale · B·A·dropout(x), keeping u = A·dropout(x) [M, rank].
  virtual void lora_forward(const float* x, int64_t M, const LoraWeights& w, const LoraDropout& dropout, float* u,
                            float* y, std::vector<float>& scratch) const = 0;
  // From dy [M, out]: grad.A and grad.B accumulate, dx [M, in] gets the
  // adapter's share added. x, u and dropout are forward's.
  virtual void lora_backward(const float* x, const float* u, const float* dy, int64_t M, const LoraWeights& w,
                             const LoraDropout& dropout, LoraWeights& grad, float* dx,
                             std::vector<float>& scratch) const = 0;
  // C[M,N] = alpha · op(A)·op(B) + beta · C, f32, row-major (BLAS conventions), on every thread.
  virtual void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) const = 0;
  // dx (+)= dy · W for y = x·Wᵀ.
  virtual void matmul_backward_input(const float* dy, int64_t M, const Tensor& W, float* dx, bool accumulate) const = 0;
  // dW[N,K] (+)= dyᵀ · x.
  virtual void matmul_backward_weight(const float* dy, const float* x, int64_t M, int64_t N, int64_t K, float* dW,
                                      bool accumulate) const = 0;
  // dbias[N] += column sums of dy[M,N].
  virtual void bias_backward(const float* dy, int64_t M, int64_t N, float* dbias) const = 0;

  // ---- elementwise and normalisation ----
  virtual void embedding(const Tensor& table, const int32_t* ids, int64_t n, float* out) const = 0;
  virtual void embedding_backward(const float* dout, const int32_t* ids, int64_t n, int64_t dim, float* dtable) const = 0;
  // out = x / √(mean(x²) + eps) · (offset + weight); offset 1 is Gemma's norm.
  virtual void rmsnorm(const float* x, const float* weight, float offset, float eps, int64_t rows, int64_t dim,
                       float* out) const = 0;
  virtual void rmsnorm_backward(const float* dy, const float* x, const float* weight, float offset, float eps,
                                int64_t rows, int64_t dim, float* dx, float* dweight, bool accumulate) const = 0;
  // Rotary embedding (rotate-half layout) in place on x [rows, heads,
  // head_dim]; cos/sin [rows, head_dim/2] hold each row's own angles.
  virtual void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const float* cos,
                    const float* sin) const = 0;
  virtual void rope_backward(float* dx, int64_t rows, int64_t heads, int64_t head_dim, const float* cos,
                             const float* sin) const = 0;
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) const = 0;
  virtual void silu_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                 int64_t n) const = 0;
  // out = gelu_tanh(gate) · up (GeGLU with transformers' gelu_pytorch_tanh).
  virtual void gelu_tanh_mul(const float* gate, const float* up, float* out, int64_t n) const = 0;
  virtual void gelu_tanh_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                      int64_t n) const = 0;
  virtual void add_inplace(float* x, const float* y, int64_t n) const = 0;
  virtual void scale_inplace(float* x, float s, int64_t n) const = 0;
  // x = cap · tanh(x / cap), elementwise (logit soft-capping).
  virtual void softcap_inplace(float* x, float cap, int64_t n) const = 0;

  // ---- attention ----
  // Writes row r of k and v [rows, kv_heads·head_dim] at the position and
  // block its run gives it.
  virtual void store_kv(const float* k, const float* v, std::span<const AttentionRun> runs,
                        const PagedKV& cache) const = 0;
  // Over the paged cache: eager materialises every score row (the
  // reference), flash walks key tiles with an online softmax.
  virtual void attention_eager(const float* q, const PagedKV& cache, const AttentionBatch& batch, float* out,
                               std::vector<float>& scores) const = 0;
  virtual void attention_flash(const float* q, const PagedKV& cache, const AttentionBatch& batch, float* out) const = 0;
  virtual void attention_train_forward(const float* q, const float* k, const float* v,
                                       const SequenceAttentionShape& shape, float* out, float* lse) const = 0;
  virtual void attention_train_backward(const float* q, const float* k, const float* v, const float* out,
                                        const float* dout, const float* lse, const SequenceAttentionShape& shape,
                                        float* dq, float* dk, float* dv) const = 0;

  // ---- loss and optimiser ----
  // Σ cross-entropy of the logits hidden[n,H]·lm_headᵀ (soft-capped when
  // softcap > 0) against targets (< 0 ignored); dhidden (overwritten) and
  // dlm_head (accumulated) when not null.
  virtual double cross_entropy(const float* hidden, int64_t n, const Tensor& lm_head, float softcap,
                               const int32_t* targets, float grad_scale, float* dhidden, float* dlm_head) const = 0;
  // Σ x², the same whatever the thread count.
  virtual double sum_of_squares(const float* x, int64_t n) const = 0;
  // torch.optim.AdamW on one tensor (then g = 0): w *= decay; m, v updated
  // from clip·g; w −= step_size · m / (√v / bias2_sqrt + eps).
  struct AdamWStep {
    float clip, decay, beta1, beta2, eps, step_size, bias2_sqrt;
  };
  virtual void adamw(float* w, float* g, float* m, float* v, int64_t n, const AdamWStep& s) const = 0;
};

// The GPUs present: this build's and this machine's. `reason` says why
// there are none (no CUDA backend in the build, no driver, no device).
struct GpuInventory {
  int count = 0;
  std::string reason;
};
GpuInventory gpu_inventory();

// The backend of a device; fails naming the device when this build or this
// machine has none.
const Backend& backend_for(Device device);

}  // namespace slm
