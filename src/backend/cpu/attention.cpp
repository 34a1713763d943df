#include "backend/cpu/flash.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/simd.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace slm::cpu {

namespace {

// Every run is attended as matrix products over tiles of queries and keys,
// a single decoding query as well: stacked with the other heads of its group
// (below), a key tile costs one pass for all of them, where dot products per
// key and head read it once per head.
constexpr int64_t kTileQueries = 64, kTileKeys = 64;
// A tile takes the queries of up to this many heads that share a KV head,
// stacked as rows (the heads of a query, then the next query), so that each
// key and value tile is widened and packed once for all of them.
constexpr int64_t kMaxStackedHeads = 4;
static_assert(kTileQueries * kMaxStackedHeads <= kMaxTileQueries);

// Element offset of (block, head, slot) in a layer's pages.
int64_t cache_offset(const PagedKV& c, int32_t block, int64_t head, int64_t slot) {
  return ((static_cast<int64_t>(block) * c.kv_heads + head) * c.block_tokens + slot) * c.head_dim;
}

// Consecutive key rows of one KV head inside one block, whatever their dtype.
class BlockRows {
 public:
  BlockRows(const void* base, const PagedKV& c, int32_t block, int64_t head, int64_t slot)
      : kernels_(vector_kernels()), dtype_(c.dtype), head_dim_(c.head_dim) {
    const int64_t offset = cache_offset(c, block, head, slot);
    if (dtype_ == DType::F32) {
      f32_ = static_cast<const float*>(base) + offset;
    } else {
      half_ = static_cast<const uint16_t*>(base) + offset;
    }
  }

  float dot(const float* q, int64_t row) const {
    switch (dtype_) {
      case DType::BF16: return kernels_.bf16(q, half_ + row * head_dim_, head_dim_);
      case DType::F16: return kernels_.f16(q, half_ + row * head_dim_, head_dim_);
      default: return kernels_.f32(q, f32_ + row * head_dim_, head_dim_);
    }
  }

  // out += p · row
  void accumulate(float p, int64_t row, float* out) const {
    switch (dtype_) {
      case DType::BF16: kernels_.axpy_bf16(p, half_ + row * head_dim_, out, head_dim_); break;
      case DType::F16: kernels_.axpy_f16(p, half_ + row * head_dim_, out, head_dim_); break;
      default: kernels_.axpy(p, f32_ + row * head_dim_, out, head_dim_); break;
    }
  }

  // `rows` rows as f32 into `out`: copied, or widened from f16/bf16.
  void to_f32(int64_t rows, float* out) const {
    if (dtype_ == DType::F32) {
      std::copy_n(f32_, rows * head_dim_, out);
    } else {
      (dtype_ == DType::BF16 ? kernels_.widen_bf16 : kernels_.widen_f16)(half_, rows * head_dim_, out);
    }
  }
  const float* f32() const { return f32_; }

 private:
  const VectorKernels& kernels_;
  DType dtype_;
  int64_t head_dim_;
  const float* f32_ = nullptr;
  const uint16_t* half_ = nullptr;
};

// Rows [j0, j0 + nj) of KV head g of a run's keys or values (`base`) as
// f32: read in place when they lie in one block of an f32 cache, else
// copied or widened block by block into `buffer`, so that a tile spans
// blocks shorter than it.
const float* tile_rows(const void* base, const PagedKV& c, const AttentionRun& run, int64_t g, int64_t j0, int64_t nj,
                       float* buffer) {
  const int64_t bt = c.block_tokens;
  if (c.dtype == DType::F32 && j0 % bt + nj <= bt) return BlockRows(base, c, run.block_table[j0 / bt], g, j0 % bt).f32();
  for (int64_t j = j0; j < j0 + nj;) {
    const int64_t rows = std::min(bt - j % bt, j0 + nj - j);
    BlockRows(base, c, run.block_table[j / bt], g, j % bt).to_f32(rows, buffer + (j - j0) * c.head_dim);
    j += rows;
  }
  return buffer;
}

int64_t query_tiles(const AttentionRun& run) { return (run.n_queries + kTileQueries - 1) / kTileQueries; }

// How many heads of a group sharing a KV head one tile stacks: the most that
// divides the group, up to kMaxStackedHeads.
int64_t stacked_heads(int64_t heads, int64_t kv_heads) {
  int64_t stack = std::min(heads / kv_heads, kMaxStackedHeads);
  while ((heads / kv_heads) % stack != 0) --stack;
  return stack;
}

// Numbers the work items (each `stack` heads × a query tile of a run) and
// returns their count.
int64_t number_work(std::span<AttentionRun> runs, int64_t heads, int64_t stack) {
  int64_t total = 0;
  for (AttentionRun& run : runs) {
    run.work_begin = total;
    total += heads / stack * query_tiles(run);
  }
  return total;
}

// The run, first head, head count and first query of work item `item`.
struct WorkItem {
  const AttentionRun* run;
  int64_t head;
  int64_t heads;
  int64_t i0;
};
WorkItem work_item(std::span<const AttentionRun> runs, int64_t item, int64_t stack) {
  const auto it = std::upper_bound(runs.begin(), runs.end(), item,
                                   [](int64_t value, const AttentionRun& r) { return value < r.work_begin; });
  const AttentionRun& run = *(it - 1);
  const int64_t tiles = query_tiles(run), local = item - run.work_begin;
  return {&run, local / tiles * stack, stack, local % tiles * kTileQueries};
}

// The largest of x[0, n), -inf when n is 0: sixteen running maxima, which the
// compiler keeps in vector registers. (A reduction through one std::max, even
// under `omp simd`, compiled to a chain of scalar maxss: 8% of a 2048-token
// prefill.)
float max_of(const float* x, int64_t n) {
  constexpr int64_t kLanes = 16;
  float lanes[kLanes];
  std::fill_n(lanes, kLanes, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) lanes[k] = std::max(lanes[k], x[i + k]);
  }
  for (; i < n; ++i) lanes[0] = std::max(lanes[0], x[i]);
  return *std::max_element(lanes, lanes + kLanes);
}

}  // namespace

void store_kv(const float* k, const float* v, std::span<const AttentionRun> runs, const PagedKV& c) {
  const int64_t row_width = c.kv_heads * c.head_dim;
  for (const AttentionRun& run : runs) {
    for (int64_t i = 0; i < run.n_queries; ++i) {
      const int64_t pos = run.q_start + i;
      const int32_t block = run.block_table[pos / c.block_tokens];
      for (int64_t g = 0; g < c.kv_heads; ++g) {
        const int64_t row = cache_offset(c, block, g, pos % c.block_tokens) / c.head_dim;
        const int64_t from = (run.row0 + i) * row_width + g * c.head_dim;
        store_row(k + from, c.head_dim, c.dtype, c.keys, row);
        store_row(v + from, c.head_dim, c.dtype, c.values, row);
      }
    }
  }
}

void flash_tile(const float* q, int64_t q_stride, int64_t ni, int64_t rows_per_query, int64_t i0, const float* k,
                const float* v, int64_t kv_stride, int64_t nj, int64_t j0, int64_t head_dim, float scale,
                float softcap, int64_t window, float* scores, const FlashRows& state) {
  sgemm(false, true, ni, nj, head_dim, scale, q, q_stride, k, kv_stride, 0.0f, scores, nj);
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  float new_max[kMaxTileQueries], correction[kMaxTileQueries];
  for (int64_t r = 0; r < ni; ++r) {
    float* row = scores + r * nj;
    const int64_t i = i0 + r / rows_per_query;
    // The keys query i sees are one run [lo, hi) of the tile.
    const int64_t lo = std::clamp<int64_t>(first_key(i, window) - j0, 0, nj);
    const int64_t hi = std::clamp<int64_t>(i + 1 - j0, lo, nj);
    std::fill(row, row + lo, kMasked);
    std::fill(row + hi, row + nj, kMasked);
    if (softcap > 0) {
      for (int64_t c = lo; c < hi; ++c) row[c] = soft_cap(row[c], softcap);
    }
    new_max[r] = std::max(state.row_max[r], max_of(row + lo, hi - lo));
    // The factor the row's earlier sums shrink by: e^(old max - new max),
    // exponentiated below for all rows at once.
    correction[r] = new_max[r] == kMasked ? 0.0f : state.row_max[r] - new_max[r];
  }
  const VectorKernels& kernels = vector_kernels();
  kernels.exp_shifted(correction, 0.0f, correction, ni);
  for (int64_t r = 0; r < ni; ++r) {
    float* row = scores + r * nj;
    if (new_max[r] == -std::numeric_limits<float>::infinity()) {
      std::fill_n(row, nj, 0.0f);  // no key of this tile is visible from this row
      continue;
    }
    const auto sum = static_cast<float>(kernels.exp_shifted(row, new_max[r], row, nj));
    state.row_sum[r] = state.row_sum[r] * correction[r] + sum;
    state.row_max[r] = new_max[r];
    // Past the first key tiles a row's maximum seldom moves (e^0 is exactly
    // 1): its sums stay as they are.
    float* o = state.acc + r * head_dim;
    if (correction[r] != 1.0f) {
      for (int64_t d = 0; d < head_dim; ++d) o[d] *= correction[r];
    }
  }
  sgemm(false, false, ni, head_dim, nj, 1.0f, scores, nj, v, kv_stride, 1.0f, state.acc, head_dim);
}


void attention_eager(const float* q, const PagedKV& c, const AttentionBatch& batch, std::vector<float>& scores,
                     float* out) {
  const int64_t hd = c.head_dim, group = batch.heads / c.kv_heads, bt = c.block_tokens;
  const float scale = score_scale(batch.scale, hd);
  // Run r's score rows start at its work_begin (here: offset into `scores`).
  int64_t total = 0;
  for (AttentionRun& run : batch.runs) {
    run.work_begin = total;
    total += batch.heads * run.n_queries * (run.q_start + run.n_queries);
  }
  scores.resize(static_cast<size_t>(total));
  for (const AttentionRun& run : batch.runs) {
    const int64_t kv_len = run.q_start + run.n_queries;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t h = 0; h < batch.heads; ++h) {
      for (int64_t i = 0; i < run.n_queries; ++i) {
        const int64_t pos = run.q_start + i;
        const float* qi = q + ((run.row0 + i) * batch.heads + h) * hd;
        float* row = scores.data() + run.work_begin + (h * run.n_queries + i) * kv_len;
        const int64_t first = first_key(pos, batch.window);
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < kv_len; ++j) {
          const BlockRows k(c.keys, c, run.block_table[j / bt], h / group, j % bt);
          row[j] = j >= first && j <= pos ? soft_cap(k.dot(qi, 0) * scale, batch.softcap)
                                          : -std::numeric_limits<float>::infinity();
          max_score = std::max(max_score, row[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < kv_len; ++j) {
          row[j] = std::exp(row[j] - max_score);
          sum += row[j];
        }
        float* o = out + ((run.row0 + i) * batch.heads + h) * hd;
        std::fill(o, o + hd, 0.0f);
        for (int64_t j = first; j <= pos; ++j) {
          const BlockRows v(c.values, c, run.block_table[j / bt], h / group, j % bt);
          v.accumulate(row[j] / sum, 0, o);
        }
      }
    }
  }
}

namespace {

// One work item: a tile of up to 64 queries of `w.heads` heads against every
// key they see, through flash_tile's matrix products, which reuse each key
// and value row across the tile's rows. Key tiles are the 64-aligned runs of
// positions (one block of the default size), read by tile_rows. The scratch
// is each thread's own and kept from call to call (decoding calls once per
// layer and token).
struct TileScratch {
  std::vector<float> scores, acc, row_max, row_sum, widened_k, widened_v, stacked_q;
  void reserve(int64_t head_dim) {
    auto at_least = [](std::vector<float>& v, int64_t n) {
      if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
    };
    at_least(scores, kMaxTileQueries * kTileKeys);
    at_least(acc, kMaxTileQueries * head_dim);
    at_least(row_max, kMaxTileQueries);
    at_least(row_sum, kMaxTileQueries);
    at_least(widened_k, kTileKeys * head_dim);
    at_least(widened_v, kTileKeys * head_dim);
    at_least(stacked_q, kMaxTileQueries * head_dim);
  }
};

// The rows of work item w, and where their first query sits.
struct TileRows {
  int64_t ni, rows, first, end_key;  // queries, rows (queries × heads), absolute positions
};
TileRows tile_rows_of(const WorkItem& w) {
  const int64_t ni = std::min(kTileQueries, w.run->n_queries - w.i0), first = w.run->q_start + w.i0;
  return {ni, ni * w.heads, first, first + ni};
}

// Folds the keys [j_begin, j_end) into fresh running state of w's rows in t
// (acc, row_max, row_sum).
void flash_query_tile(const float* q, const PagedKV& c, const AttentionBatch& batch, const WorkItem& w,
                      int64_t j_begin, int64_t j_end, TileScratch& t) {
  const AttentionRun& run = *w.run;
  const int64_t hd = c.head_dim, g = w.head / (batch.heads / c.kv_heads);
  const float scale = score_scale(batch.scale, hd);
  const TileRows tile = tile_rows_of(w);
  // Row r is query r / heads of head w.head + r % heads. A query's heads are
  // adjacent in q: a single query's rows are read in place, several queries'
  // copied a query at a time.
  const float* q_tile = q + ((run.row0 + w.i0) * batch.heads + w.head) * hd;
  int64_t q_stride = batch.heads * hd;
  if (w.heads > 1) {
    if (tile.ni > 1) {
      for (int64_t i = 0; i < tile.ni; ++i) {
        std::copy_n(q_tile + i * q_stride, w.heads * hd, t.stacked_q.data() + i * w.heads * hd);
      }
      q_tile = t.stacked_q.data();
    }
    q_stride = hd;
  }
  std::fill_n(t.acc.data(), tile.rows * hd, 0.0f);
  std::fill_n(t.row_max.data(), tile.rows, -std::numeric_limits<float>::infinity());
  std::fill_n(t.row_sum.data(), tile.rows, 0.0f);
  for (int64_t j0 = j_begin; j0 < j_end;) {
    const int64_t nj = std::min(kTileKeys - j0 % kTileKeys, j_end - j0);
    const float* k = tile_rows(c.keys, c, run, g, j0, nj, t.widened_k.data());
    const float* v = tile_rows(c.values, c, run, g, j0, nj, t.widened_v.data());
    flash_tile(q_tile, q_stride, tile.rows, w.heads, tile.first, k, v, hd, nj, j0, hd, scale, batch.softcap,
               batch.window, t.scores.data(), {t.acc.data(), t.row_max.data(), t.row_sum.data()});
    j0 += nj;
  }
}

// Output row r of work item w.
float* output_row(float* out, const AttentionBatch& batch, const WorkItem& w, int64_t r, int64_t head_dim) {
  return out + ((w.run->row0 + w.i0 + r / w.heads) * batch.heads + w.head + r % w.heads) * head_dim;
}

// The keys work item w sees, as 64-aligned tiles: [begin, end) of
// absolute positions and the count of tiles they touch.
struct KeyRange {
  int64_t begin, end, tiles;
};
KeyRange visible_keys(const WorkItem& w, int64_t window) {
  const TileRows tile = tile_rows_of(w);
  const int64_t begin = first_key(tile.first, window);
  return {begin, tile.end_key, (tile.end_key + kTileKeys - 1) / kTileKeys - begin / kTileKeys};
}

// Part `s` of `parts` of the visible keys: whole tiles dealt out evenly.
std::pair<int64_t, int64_t> key_part(const KeyRange& keys, int64_t s, int64_t parts) {
  const int64_t first_tile = keys.begin / kTileKeys;
  const int64_t b = (first_tile + keys.tiles * s / parts) * kTileKeys;
  const int64_t e = (first_tile + keys.tiles * (s + 1) / parts) * kTileKeys;
  return {std::max(keys.begin, b), std::min(keys.end, e)};
}

}  // namespace

int64_t key_splits(int64_t items, int64_t min_key_tiles, int64_t threads) {
  if (items >= 2 * threads) return 1;
  // Four parts a thread, at least four key tiles a part, and as many parts
  // as the threads divide when the keys allow.
  int64_t parts = std::min((4 * threads + items - 1) / items, min_key_tiles / 4);
  while (parts > 1 && parts < min_key_tiles / 4 && items * parts % threads != 0) ++parts;
  return std::max<int64_t>(parts, 1);
}

void attention_flash(const float* q, const PagedKV& c, const AttentionBatch& batch, float* out) {
  const int64_t hd = c.head_dim, stack = stacked_heads(batch.heads, c.kv_heads);
  const int64_t items = number_work(batch.runs, batch.heads, stack);
  // Decoding a few sequences makes fewer work items than two a thread (three
  // for nine heads over three KV heads): each item's keys are then split into
  // parts folded on their own and merged (as flash decoding does), where the
  // items alone left a thread idle a third of the time at depth.
  int64_t min_key_tiles = std::numeric_limits<int64_t>::max();
  for (const AttentionRun& run : batch.runs) {
    if (run.n_queries > kTileQueries) min_key_tiles = 0;
    else min_key_tiles = std::min(min_key_tiles, visible_keys({&run, 0, stack, 0}, batch.window).tiles);
  }
  const int64_t parts = key_splits(items, min_key_tiles, omp_get_max_threads());
  // Each part's running state: rows × (head_dim + 2) floats (acc, max, sum).
  const int64_t part_stride = kTileQueries * stack * (hd + 2);
  thread_local std::vector<float> partials;  // the caller's; inside the region, thread_local names the worker's
  if (parts > 1) partials.resize(static_cast<size_t>(items * parts * part_stride));
  float* partial = partials.data();
#pragma omp parallel if (items * parts > 1)
  {
    thread_local TileScratch scratch;
    scratch.reserve(hd);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < items * parts; ++task) {
      const WorkItem w = work_item(batch.runs, task / parts, stack);
      const auto [j_begin, j_end] = key_part(visible_keys(w, batch.window), task % parts, parts);
      flash_query_tile(q, c, batch, w, j_begin, j_end, scratch);
      const int64_t rows = tile_rows_of(w).rows;
      if (parts == 1) {
        for (int64_t r = 0; r < rows; ++r) {
          const float inv = 1.0f / scratch.row_sum[static_cast<size_t>(r)];
          float* o = output_row(out, batch, w, r, hd);
          for (int64_t d = 0; d < hd; ++d) o[d] = scratch.acc[static_cast<size_t>(r * hd + d)] * inv;
        }
      } else {
        float* p = partial + task * part_stride;
        std::copy_n(scratch.acc.data(), rows * hd, p);
        std::copy_n(scratch.row_max.data(), rows, p + rows * hd);
        std::copy_n(scratch.row_sum.data(), rows, p + rows * (hd + 1));
      }
    }
    if (parts > 1) {
      // out = Σ acc_s·e^(max_s − max) / Σ sum_s·e^(max_s − max), max the
      // largest max_s (a part no key of which a row sees has max_s −inf).
#pragma omp for schedule(static)
      for (int64_t item = 0; item < items; ++item) {
        const WorkItem w = work_item(batch.runs, item, stack);
        const int64_t rows = tile_rows_of(w).rows;
        for (int64_t r = 0; r < rows; ++r) {
          float top = -std::numeric_limits<float>::infinity();
          for (int64_t s = 0; s < parts; ++s) top = std::max(top, partial[(item * parts + s) * part_stride + rows * hd + r]);
          float* o = output_row(out, batch, w, r, hd);
          std::fill_n(o, hd, 0.0f);
          float sum = 0.0f;
          for (int64_t s = 0; s < parts; ++s) {
            const float* p = partial + (item * parts + s) * part_stride;
            const float part_max = p[rows * hd + r];
            if (part_max == -std::numeric_limits<float>::infinity()) continue;
            const float weight = std::exp(part_max - top);
            sum += p[rows * (hd + 1) + r] * weight;
            for (int64_t d = 0; d < hd; ++d) o[d] += p[r * hd + d] * weight;
          }
          const float inv = 1.0f / sum;
          for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
        }
      }
    }
  }
}

}  // namespace slm::cpu
