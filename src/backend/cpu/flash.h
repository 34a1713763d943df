// The inner step of flash attention, shared by inference (attention_flash
// over a KV cache) and training (attention_train_forward over whole
// sequences): one tile of queries against one tile of keys as two matrix
// products, with the online softmax between them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace slm::cpu {

// Whether the query at absolute position i sees the key at j: causal, and
// with window > 0 only the last `window` positions.
inline bool visible(int64_t i, int64_t j, int64_t window) { return j <= i && (window <= 0 || i - j < window); }
// The first key the query at i sees (the last is i itself).
inline int64_t first_key(int64_t i, int64_t window) { return window > 0 ? std::max<int64_t>(0, i - window + 1) : 0; }

// The factor of q·k: `scale` when given (Gemma's query_pre_attn_scalar), else 1/√head_dim.
inline float score_scale(float scale, int64_t head_dim) {
  return scale > 0 ? scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}
// A scaled score after soft-capping (Gemma 2): cap·tanh(s/cap); cap 0 leaves it.
inline float soft_cap(float score, float cap) { return cap > 0 ? cap * std::tanh(score / cap) : score; }

// The running state of ni query rows: acc [ni, head_dim] (unnormalised
// output), row_max and row_sum [ni] (the softmax's running maximum and
// denominator). Start with acc 0, row_max -inf, row_sum 0.
struct FlashRows {
  float* acc;
  float* row_max;
  float* row_sum;
};

// The most query rows one flash_tile takes.
constexpr int64_t kMaxTileQueries = 256;

// Folds keys [j0, j0+nj) into the state of ni query rows, each
// `rows_per_query` consecutive ones of one query (the heads of a group that
// share these keys), from the query at absolute position i0 on: S =
// soft_cap(scale·Q·Kᵀ), masked by `visible`, then acc = acc·correction +
// softmax numerators·V. q rows have stride q_stride, k and v rows kv_stride,
// all f32. `scores` holds ni·nj floats of scratch.
void flash_tile(const float* q, int64_t q_stride, int64_t ni, int64_t rows_per_query, int64_t i0, const float* k,
                const float* v, int64_t kv_stride, int64_t nj, int64_t j0, int64_t head_dim, float scale,
                float softcap, int64_t window, float* scores, const FlashRows& state);

}  // namespace slm::cpu
