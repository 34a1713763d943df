// CPU kernels: the arithmetic of a decoder, knowing nothing of models or files.
// Activations are f32, row-major; weights may be f32, f16 or bf16 and are
// always accumulated in f32. Every fast kernel has a *_reference twin: the
// plain loop that tests hold it to.
#pragma once

#include <slm/tensor.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace slm::cpu {

// C[M,N] = alpha · op(A)·op(B) + beta · C (row-major, BLAS conventions) on
// the calling thread. Our OpenMP loops are the parallelism: every kernel
// reaches BLAS through this, which keeps OpenBLAS single-threaded inside them.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// y[M,N] = x[M,K] · W[N,K]ᵀ (+ bias[N] when not null). W is any weight dtype.
void matmul(const float* x, int64_t M, int64_t K, const Tensor& W, const float* bias, float* y);
void matmul_reference(const float* x, int64_t M, int64_t K, const Tensor& W, const float* bias, float* y);

// Several products of the same input (q/k/v, gate/up) in one pass over the
// threads: decode issues hundreds of products per token, and each parallel
// region costs a barrier.
struct Projection {
  const Tensor* weight;
  const float* bias;  // may be null
  float* out;
};
void matmul_group(const float* x, int64_t M, int64_t K, std::initializer_list<Projection> projections);

// sgemm on every thread: C is cut into row blocks (or column blocks when it has few
// rows, as a rank-r gradient [r, K] does) and each block is one
// single-threaded BLAS call. For the rank-thin products of LoRA, which one
// thread would otherwise run while the others wait.
void sgemm_parallel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// y[M, N] += scale · (x·Aᵀ)·Bᵀ for a low-rank pair A [rank, K], B [N, rank]
// (f32), the product a LoRA adapter adds beside a linear layer; u [M, rank]
// receives x·Aᵀ. Rank-thin, so a few percent of the layer's own product.
void low_rank_add(const float* x, int64_t M, const Tensor& A, const Tensor& B, float scale, float* u, float* y);

// Rows of `table` [V, D] picked by ids, converted to f32: out[n, D].
void embedding(const Tensor& table, const int32_t* ids, int64_t n, float* out);

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, for `rows` rows of `dim`.
void rmsnorm(const float* x, const float* weight, float eps, int64_t rows, int64_t dim, float* out);

// Rotary embedding in the Hugging Face rotate-half layout, in place on x
// [rows, heads, head_dim]; cos/sin are [rows, head_dim/2].
void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin);

// out = silu(gate) * up, elementwise.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// x += y, elementwise.
void add_inplace(float* x, const float* y, int64_t n);

// Writes n floats as row `row` of a [.., n] table of f32, f16 or bf16.
void store_row(const float* x, int64_t n, DType dtype, void* table, int64_t row);

// Attention of n queries at absolute positions [q_start, q_start+n) against
// keys/values [0, q_start+n) of a cache laid out [kv_heads, capacity, head_dim]
// in kv_dtype (f32, f16 or bf16). Causal; with window > 0 a query at i sees
// keys j with i-j < window.
struct AttentionShape {
  int64_t n_queries;
  int64_t q_start;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  int64_t capacity;
  int64_t window;
  DType kv_dtype = DType::F32;
};

// Materialises the full score matrix [heads, n, q_start+n] in `scores`
// (resized as needed), as eager attention does.
void attention_eager(const float* q, const void* keys, const void* values, const AttentionShape& shape,
                     std::vector<float>& scores, float* out);
// Walks keys and values in blocks with an online softmax; extra memory is a
// small tile per thread, whatever the length.
void attention_flash(const float* q, const void* keys, const void* values, const AttentionShape& shape, float* out);

}  // namespace slm::cpu
