#include "kernels/cpu/flash.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace slm::cpu {

namespace {

// Keys [first, last) that the query at absolute position `pos` may see.
struct KeyRange {
  int64_t first;
  int64_t last;
};

// From this many queries on, attention_flash runs as matrix products over
// tiles; below, as dot products (a matrix product per key tile costs more in
// calls than a single query gains).
constexpr int64_t kMinTileQueries = 8;

KeyRange visible_keys(int64_t pos, int64_t window) { return {first_key(pos, window), pos + 1}; }

// Rows of one KV head in the cache, whatever their dtype.
class CacheRows {
 public:
  CacheRows(const void* base, int64_t head, const AttentionShape& s)
      : kernels_(vector_kernels()), dtype_(s.kv_dtype), head_dim_(s.head_dim) {
    const int64_t offset = head * s.capacity * s.head_dim;
    if (dtype_ == DType::F32) {
      f32_ = static_cast<const float*>(base) + offset;
    } else {
      half_ = static_cast<const uint16_t*>(base) + offset;
    }
  }

  float dot(const float* q, int64_t j) const {
    switch (dtype_) {
      case DType::BF16: return kernels_.bf16(q, half_ + j * head_dim_, head_dim_);
      case DType::F16: return kernels_.f16(q, half_ + j * head_dim_, head_dim_);
      default: return kernels_.f32(q, f32_ + j * head_dim_, head_dim_);
    }
  }

  // out += p · row j
  void accumulate(float p, int64_t j, float* out) const {
    switch (dtype_) {
      case DType::BF16: kernels_.axpy_bf16(p, half_ + j * head_dim_, out, head_dim_); break;
      case DType::F16: kernels_.axpy_f16(p, half_ + j * head_dim_, out, head_dim_); break;
      default: kernels_.axpy(p, f32_ + j * head_dim_, out, head_dim_); break;
    }
  }

 private:
  const VectorKernels& kernels_;
  DType dtype_;
  int64_t head_dim_;
  const float* f32_ = nullptr;
  const uint16_t* half_ = nullptr;
};

}  // namespace

void flash_tile(const float* q, int64_t q_stride, int64_t ni, int64_t i0, const float* k, const float* v,
                int64_t kv_stride, int64_t nj, int64_t j0, int64_t head_dim, float scale, int64_t window,
                float* scores, const FlashRows& state) {
  sgemm(false, true, ni, nj, head_dim, scale, q, q_stride, k, kv_stride, 0.0f, scores, nj);
  for (int64_t r = 0; r < ni; ++r) {
    float* row = scores + r * nj;
    const int64_t i = i0 + r;
    float tile_max = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < nj; ++c) {
      if (!visible(i, j0 + c, window)) row[c] = -std::numeric_limits<float>::infinity();
      tile_max = std::max(tile_max, row[c]);
    }
    const float new_max = std::max(state.row_max[r], tile_max);
    if (new_max == -std::numeric_limits<float>::infinity()) {
      std::fill_n(row, nj, 0.0f);  // no key of this tile is visible from this row
      continue;
    }
    const float correction = std::exp(state.row_max[r] - new_max);
    float sum = 0.0f;
    for (int64_t c = 0; c < nj; ++c) {
      row[c] = std::exp(row[c] - new_max);
      sum += row[c];
    }
    state.row_sum[r] = state.row_sum[r] * correction + sum;
    state.row_max[r] = new_max;
    float* o = state.acc + r * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) o[d] *= correction;
  }
  sgemm(false, false, ni, head_dim, nj, 1.0f, scores, nj, v, kv_stride, 1.0f, state.acc, head_dim);
}

namespace {

// attention_flash for a block of queries (a prompt): tiles of 64 queries ×
// 64 keys through flash_tile's matrix products, which reuse each key and
// value row across the tile's queries. Cached rows in f16/bf16 are widened
// a tile at a time.
void attention_flash_tiles(const float* q, const void* keys, const void* values, const AttentionShape& s, float* out) {
  constexpr int64_t kTileQueries = 64, kTileKeys = 64;
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t query_tiles = (s.n_queries + kTileQueries - 1) / kTileQueries;
  const VectorKernels& kernels = vector_kernels();
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(kTileQueries * kTileKeys)), acc(static_cast<size_t>(kTileQueries * hd));
    std::vector<float> row_max(static_cast<size_t>(kTileQueries)), row_sum(static_cast<size_t>(kTileQueries));
    std::vector<float> widened_k, widened_v;
    if (s.kv_dtype != DType::F32) {
      widened_k.resize(static_cast<size_t>(kTileKeys * hd));
      widened_v.resize(widened_k.size());
    }
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t h = 0; h < s.heads; ++h) {
      for (int64_t t = 0; t < query_tiles; ++t) {
        const int64_t i0 = t * kTileQueries, ni = std::min(kTileQueries, s.n_queries - i0);
        const int64_t first = s.q_start + i0, end_key = first + ni;  // absolute positions
        const int64_t cache_offset = (h / group) * s.capacity * hd;
        std::fill_n(acc.data(), ni * hd, 0.0f);
        std::fill_n(row_max.data(), ni, -std::numeric_limits<float>::infinity());
        std::fill_n(row_sum.data(), ni, 0.0f);
        for (int64_t j0 = visible_keys(first, s.window).first; j0 < end_key; j0 += kTileKeys) {
          const int64_t nj = std::min(kTileKeys, end_key - j0);
          const float* k;
          const float* v;
          if (s.kv_dtype == DType::F32) {
            k = static_cast<const float*>(keys) + cache_offset + j0 * hd;
            v = static_cast<const float*>(values) + cache_offset + j0 * hd;
          } else {
            const auto widen = s.kv_dtype == DType::BF16 ? kernels.widen_bf16 : kernels.widen_f16;
            widen(static_cast<const uint16_t*>(keys) + cache_offset + j0 * hd, nj * hd, widened_k.data());
            widen(static_cast<const uint16_t*>(values) + cache_offset + j0 * hd, nj * hd, widened_v.data());
            k = widened_k.data();
            v = widened_v.data();
          }
          flash_tile(q + (i0 * s.heads + h) * hd, s.heads * hd, ni, first, k, v, hd, nj, j0, hd, scale, s.window,
                     scores.data(), {acc.data(), row_max.data(), row_sum.data()});
        }
        for (int64_t r = 0; r < ni; ++r) {
          const float inv = 1.0f / row_sum[static_cast<size_t>(r)];
          float* o = out + ((i0 + r) * s.heads + h) * hd;
          for (int64_t d = 0; d < hd; ++d) o[d] = acc[static_cast<size_t>(r * hd + d)] * inv;
        }
      }
    }
  }
}

}  // namespace

void attention_eager(const float* q, const void* keys, const void* values, const AttentionShape& s,
                     std::vector<float>& scores, float* out) {
  const int64_t kv_len = s.q_start + s.n_queries;
  const int64_t group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  scores.resize(static_cast<size_t>(s.heads * s.n_queries * kv_len));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t h = 0; h < s.heads; ++h) {
    for (int64_t i = 0; i < s.n_queries; ++i) {
      const float* qi = q + (i * s.heads + h) * s.head_dim;
      const CacheRows k(keys, h / group, s), v(values, h / group, s);
      float* row = scores.data() + (h * s.n_queries + i) * kv_len;
      const KeyRange range = visible_keys(s.q_start + i, s.window);
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < kv_len; ++j) {
        row[j] = j >= range.first && j < range.last ? k.dot(qi, j) * scale
                                                     : -std::numeric_limits<float>::infinity();
        max_score = std::max(max_score, row[j]);
      }
      float total = 0.0f;
      for (int64_t j = 0; j < kv_len; ++j) {
        row[j] = std::exp(row[j] - max_score);
        total += row[j];
      }
      float* o = out + (i * s.heads + h) * s.head_dim;
      std::fill(o, o + s.head_dim, 0.0f);
      for (int64_t j = range.first; j < range.last; ++j) {
        const float p = row[j] / total;
        v.accumulate(p, j, o);
      }
    }
  }
}

void attention_flash(const float* q, const void* keys, const void* values, const AttentionShape& s, float* out) {
  if (s.n_queries >= kMinTileQueries) {
    attention_flash_tiles(q, keys, values, s, out);
    return;
  }
  // A few queries (decoding): per key, one dot product and one scaled row
  // added, a tile of kQueryBlock queries × kKeyBlock keys at a time; the
  // running max and sum of the online softmax replace the score matrix.
  constexpr int64_t kQueryBlock = 16;
  constexpr int64_t kKeyBlock = 64;
  const int64_t group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const int64_t query_blocks = (s.n_queries + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel
  {
    float tile[kQueryBlock * kKeyBlock];
    float running_max[kQueryBlock];
    float running_sum[kQueryBlock];
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t h = 0; h < s.heads; ++h) {
      for (int64_t b = 0; b < query_blocks; ++b) {
        const CacheRows k(keys, h / group, s), v(values, h / group, s);
        const int64_t i0 = b * kQueryBlock;
        const int64_t rows = std::min(kQueryBlock, s.n_queries - i0);
        const int64_t first_key = visible_keys(s.q_start + i0, s.window).first;
        const int64_t end_key = s.q_start + i0 + rows;
        for (int64_t r = 0; r < rows; ++r) {
          running_max[r] = -std::numeric_limits<float>::infinity();
          running_sum[r] = 0.0f;
          float* o = out + ((i0 + r) * s.heads + h) * s.head_dim;
          std::fill(o, o + s.head_dim, 0.0f);
        }
        for (int64_t j0 = first_key; j0 < end_key; j0 += kKeyBlock) {
          const int64_t cols = std::min(kKeyBlock, end_key - j0);
          for (int64_t r = 0; r < rows; ++r) {
            const KeyRange range = visible_keys(s.q_start + i0 + r, s.window);
            const float* qi = q + ((i0 + r) * s.heads + h) * s.head_dim;
            float* scores = tile + r * kKeyBlock;
            float block_max = -std::numeric_limits<float>::infinity();
            for (int64_t c = 0; c < cols; ++c) {
              const int64_t j = j0 + c;
              scores[c] = j >= range.first && j < range.last ? k.dot(qi, j) * scale
                                                             : -std::numeric_limits<float>::infinity();
              block_max = std::max(block_max, scores[c]);
            }
            if (block_max == -std::numeric_limits<float>::infinity()) continue;
            const float new_max = std::max(running_max[r], block_max);
            const float correction = std::exp(running_max[r] - new_max);
            float* o = out + ((i0 + r) * s.heads + h) * s.head_dim;
            if (correction != 1.0f) {
              for (int64_t d = 0; d < s.head_dim; ++d) o[d] *= correction;
            }
            float block_sum = 0.0f;
            for (int64_t c = 0; c < cols; ++c) {
              const float p = std::exp(scores[c] - new_max);
              if (p == 0.0f) continue;
              block_sum += p;
              v.accumulate(p, j0 + c, o);
            }
            running_sum[r] = running_sum[r] * correction + block_sum;
            running_max[r] = new_max;
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* o = out + ((i0 + r) * s.heads + h) * s.head_dim;
          const float inv = 1.0f / running_sum[r];
          for (int64_t d = 0; d < s.head_dim; ++d) o[d] *= inv;
        }
      }
    }
  }
}

}  // namespace slm::cpu
