// CPU kernels: the arithmetic of a decoder, knowing nothing of models or files.
// Activations are f32, row-major; weights may be f32, f16 or bf16 and are
// always accumulated in f32. Every fast kernel has a *_reference twin: the
// plain loop that tests hold it to.
#pragma once

#include <slm/tensor.h>

#include "backend/backend.h"

#include <cstdint>
#include <span>
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
void matmul_group(const float* x, int64_t M, int64_t K, std::span<const Projection> projections);

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

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * (offset + weight), for `rows` rows of `dim`.
void rmsnorm(const float* x, const float* weight, float offset, float eps, int64_t rows, int64_t dim, float* out);

// Rotary embedding in the Hugging Face rotate-half layout, in place on x
// [rows, heads, head_dim]; cos/sin are [rows, head_dim/2].
void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin);

// out = silu(gate) * up, elementwise.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// out = gelu_tanh(gate) * up, elementwise, gelu_tanh(g) = ½g(1 + tanh(√(2/π)(g + 0.044715g³))).
void gelu_tanh_mul(const float* gate, const float* up, float* out, int64_t n);

// x += y, elementwise.
void add_inplace(float* x, const float* y, int64_t n);

// x *= s, elementwise.
void scale_inplace(float* x, float s, int64_t n);

// x = cap · tanh(x / cap), elementwise.
void softcap_inplace(float* x, float cap, int64_t n);

// Writes n floats as row `row` of a [.., n] table of f32, f16 or bf16.
void store_row(const float* x, int64_t n, DType dtype, void* table, int64_t row);

// Writes k and v rows [rows, kv_heads·head_dim] into the paged cache at the
// positions their runs give them.
void store_kv(const float* k, const float* v, std::span<const AttentionRun> runs, const PagedKV& cache);

// Attention of a batch's query rows over the paged cache (AttentionBatch).
// Eager materialises each run's score matrix [heads, n, q_start+n] in
// `scores` (resized as needed): the reference. Flash walks the keys a tile
// at a time with an online softmax; extra memory is a small tile per thread.
void attention_eager(const float* q, const PagedKV& cache, const AttentionBatch& batch, std::vector<float>& scores,
                     float* out);
void attention_flash(const float* q, const PagedKV& cache, const AttentionBatch& batch, float* out);
// Into how many parts flash splits each work item's keys: more than one
// when the items (a tile of queries of the heads sharing a KV head) are
// fewer than two a thread and every run's keys span at least eight tiles of
// 64 (decoding one or a few sequences at depth).
int64_t key_splits(int64_t items, int64_t min_key_tiles, int64_t threads);

}  // namespace slm::cpu
