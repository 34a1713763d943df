// Backward passes of the decoder's operations (llm.c style: one explicit
// function per forward, no autograd graph), plus the two forward pieces that
// training needs and inference does not: attention over whole sequences that
// saves each row's logsumexp, and a cross-entropy that never holds the logits
// of the whole batch. Activations and gradients are f32, row-major; frozen
// weights may be any dtype. Every function here is checked against finite
// differences in tests/unit/train/.
#pragma once

#include <slm/tensor.h>

#include "backend/backend.h"

#include <cstdint>

namespace slm::cpu {

// Gradient of y[M,N] = x[M,K] · W[N,K]ᵀ with respect to x: dx = dy · W.
// W may be any dtype (frozen weights stay as loaded). With `accumulate`,
// dx += dy · W; otherwise dx is overwritten. bf16 weights on a CPU with bf16
// dot products go through the bf16 matrix kernels (dy rounded to bf16, f32
// accumulation, about 4e-3 relative), reading W in place.
void matmul_backward_input(const float* dy, int64_t M, const Tensor& W, float* dx, bool accumulate);

// Gradient with respect to W (f32): dW[N,K] (+)= dyᵀ[N,M] · x[M,K].
void matmul_backward_weight(const float* dy, const float* x, int64_t M, int64_t N, int64_t K, float* dW,
                            bool accumulate);

// Gradient of y[M,N] = x · Wᵀ + bias with respect to bias: dbias[N] += the
// column sums of dy[M,N].
void bias_backward(const float* dy, int64_t M, int64_t N, float* dbias);

// y = x / rms(x) · (offset + weight) per row. dx (+)= ∂L/∂x from dy (dx may
// alias dy); dweight, when not null, accumulates ∂L/∂weight. The row's rms is
// recomputed from x.
void rmsnorm_backward(const float* dy, const float* x, const float* weight, float offset, float eps, int64_t rows,
                      int64_t dim, float* dx, float* dweight, bool accumulate);

// The transpose of cpu::rope: rotates gradients back by each row's angle, in
// place on dx [rows, heads, head_dim].
void rope_backward(float* dx, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin);

// out = silu(gate) · up: dgate and dup from dout (both overwritten; either may
// alias dout).
void silu_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n);
// The same for out = gelu_tanh(gate) · up.
void gelu_tanh_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                            int64_t n);

// dtable[V, D] += rows of dout scattered by ids.
void embedding_backward(const float* dout, const int32_t* ids, int64_t n, int64_t dim, float* dtable);

// Training attention over `batch` sequences of `seq` tokens
// (SequenceAttentionShape, backend.h). Extra memory is one tile per thread.
// Tiles of queries × keys as matrix products, online softmax (flash attention).
void attention_train_forward(const float* q, const float* k, const float* v, const SequenceAttentionShape& shape,
                             float* out, float* lse);
// Recomputes the probabilities tile by tile from q, k and the saved lse
// (flash-attention backward), so memory stays linear in the length. dq, dk,
// dv are overwritten.
void attention_train_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, const SequenceAttentionShape& shape, float* dq, float* dk, float* dv);
// The same one query and one key at a time: the plain loops the tiled
// versions are held to.
void attention_train_forward_reference(const float* q, const float* k, const float* v,
                                       const SequenceAttentionShape& shape, float* out, float* lse);
void attention_train_backward_reference(const float* q, const float* k, const float* v, const float* out,
                                        const float* dout, const float* lse, const SequenceAttentionShape& shape,
                                        float* dq, float* dk, float* dv);

// Cross-entropy of logits = hidden[n, H] · lm_head[V, H]ᵀ (then
// softcap·tanh(logit/softcap) when softcap > 0) against targets
// (entries < 0 are ignored), computed `chunk_rows` rows at a time so only
// chunk_rows × V logits exist at once (0: about 4 MB of them, at least 64
// rows). Returns the summed loss over the counted rows (in double). When dhidden is not null it receives
// grad_scale · ∂(sum)/∂hidden (overwritten); dlm_head, when not null,
// accumulates grad_scale · ∂(sum)/∂lm_head (lm_head must then be f32-shaped).
double cross_entropy(const float* hidden, int64_t n, const Tensor& lm_head, float softcap, const int32_t* targets,
                     float grad_scale, float* dhidden, float* dlm_head, int64_t chunk_rows = 0);

}  // namespace slm::cpu
