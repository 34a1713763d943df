// attention_eager and attention_flash over the paged cache against a naive
// double-precision causal attention: grouped-query (heads / kv_heads = 3),
// queries that start past 0 (decoding against a cache), sliding windows
// shorter than the sequence, head_dim 64 and 128, 1 and 37 queries, blocks
// of 16, 64 and more tokens laid out in a shuffled order among unused
// blocks, and several sequences in one batch. Values ~ N(0,1), scores of
// order 1: tolerance 2e-5 absolute on outputs of order 1. Caches in f16 and
// bf16 are compared with the reference on the values they hold.
#include "backend/cpu/kernels.h"
#include "kernel_test_util.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace {

using slm::test::random_vector;

// One sequence's attention problem, keys and values laid out logically
// [kv_heads, kv_len, head_dim].
struct AttentionShape {
  int64_t n_queries, q_start, heads, kv_heads, head_dim, capacity, window;
  slm::DType kv_dtype = slm::DType::F32;
  float scale = 0.0f, softcap = 0.0f;  // as AttentionBatch's
};

constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& keys,
                                    const std::vector<float>& values, const AttentionShape& s) {
  std::vector<double> out(size_t(s.n_queries * s.heads * s.head_dim), 0.0);
  const int64_t group = s.heads / s.kv_heads;
  for (int64_t i = 0; i < s.n_queries; ++i) {
    const int64_t pos = s.q_start + i;
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t g = h / group;
      std::vector<double> scores;
      std::vector<int64_t> visible;
      for (int64_t j = 0; j <= pos; ++j) {
        if (s.window > 0 && pos - j >= s.window) continue;
        double dot = 0;
        for (int64_t d = 0; d < s.head_dim; ++d) {
          dot += double(q[size_t((i * s.heads + h) * s.head_dim + d)]) * keys[size_t((g * s.capacity + j) * s.head_dim + d)];
        }
        const double scaled = dot * (s.scale > 0 ? double(s.scale) : 1 / std::sqrt(double(s.head_dim)));
        scores.push_back(s.softcap > 0 ? s.softcap * std::tanh(scaled / s.softcap) : scaled);
        visible.push_back(j);
      }
      double max_score = -INFINITY, total = 0;
      for (double x : scores) max_score = std::max(max_score, x);
      for (double& x : scores) total += (x = std::exp(x - max_score));
      for (size_t t = 0; t < visible.size(); ++t) {
        for (int64_t d = 0; d < s.head_dim; ++d) {
          out[size_t((i * s.heads + h) * s.head_dim + d)] +=
              scores[t] / total * values[size_t((g * s.capacity + visible[t]) * s.head_dim + d)];
        }
      }
    }
  }
  return out;
}

struct Case {
  int64_t head_dim, n_queries, q_start, window;
  slm::DType kv_dtype = slm::DType::F32;
  int64_t block_tokens = 64;
  float scale = 0.0f, softcap = 0.0f;
  int64_t heads = 6, kv_heads = 2;
};

// The cache as the kernels read it (f32, f16 or bf16 bytes), and `values`
// replaced by what those bytes hold, so the reference sees the same numbers.
std::vector<uint8_t> to_cache(std::vector<float>& values, slm::DType dtype) {
  std::vector<uint8_t> bytes(values.size() * (dtype == slm::DType::F32 ? 4 : 2));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == slm::DType::F32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
      continue;
    }
    const uint16_t h = dtype == slm::DType::F16 ? slm::f32_to_f16(values[i]) : slm::f32_to_bf16(values[i]);
    std::memcpy(bytes.data() + 2 * i, &h, 2);
    values[i] = dtype == slm::DType::F16 ? slm::f16_to_f32(h) : slm::bf16_to_f32(h);
  }
  return bytes;
}

// The logical [kv_heads, capacity, head_dim] rows scattered into a paged
// cache of `block_tokens`-token blocks: the sequence's blocks sit in reverse
// order after `offset` unused blocks that hold NaN, so a wrong block, slot or
// stride poisons the output.
struct Paged {
  std::vector<uint8_t> keys, values;
  std::vector<int32_t> table;
  slm::PagedKV view;
};
Paged to_paged(const std::vector<uint8_t>& keys, const std::vector<uint8_t>& values, const AttentionShape& s,
               int64_t block_tokens, int64_t offset) {
  const size_t elem = s.kv_dtype == slm::DType::F32 ? 4 : 2;
  const int64_t blocks = (s.capacity + block_tokens - 1) / block_tokens;
  const int64_t total = blocks + offset + 1;
  Paged p;
  const float nan = kPoison;
  std::vector<uint8_t> poison(elem);
  if (elem == 4) {
    std::memcpy(poison.data(), &nan, 4);
  } else {
    const uint16_t h = 0x7fc0;
    std::memcpy(poison.data(), &h, 2);
  }
  const size_t bytes = size_t(total * s.kv_heads * block_tokens * s.head_dim) * elem;
  p.keys.resize(bytes);
  p.values.resize(bytes);
  for (size_t i = 0; i < bytes; i += elem) {
    std::memcpy(p.keys.data() + i, poison.data(), elem);
    std::memcpy(p.values.data() + i, poison.data(), elem);
  }
  for (int64_t b = 0; b < blocks; ++b) p.table.push_back(static_cast<int32_t>(offset + blocks - 1 - b));
  for (int64_t g = 0; g < s.kv_heads; ++g) {
    for (int64_t j = 0; j < s.capacity; ++j) {
      const int64_t block = p.table[size_t(j / block_tokens)];
      const size_t to = size_t(((block * s.kv_heads + g) * block_tokens + j % block_tokens) * s.head_dim) * elem;
      const size_t from = size_t((g * s.capacity + j) * s.head_dim) * elem;
      std::memcpy(p.keys.data() + to, keys.data() + from, size_t(s.head_dim) * elem);
      std::memcpy(p.values.data() + to, values.data() + from, size_t(s.head_dim) * elem);
    }
  }
  p.view = {p.keys.data(), p.values.data(), s.kv_dtype, block_tokens, s.kv_heads, s.head_dim};
  return p;
}

std::string name(const Case& c) {
  return std::string(slm::dtype_name(c.kv_dtype)) + " block " + std::to_string(c.block_tokens) + " head_dim " + std::to_string(c.head_dim) + " n " + std::to_string(c.n_queries) + " q_start " +
         std::to_string(c.q_start) + " window " + std::to_string(c.window) + " scale " + std::to_string(c.scale) +
         " softcap " + std::to_string(c.softcap) + " heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads);
}

void check_case(const Case& c) {
  const int64_t heads = c.heads, kv_heads = c.kv_heads;
  const int64_t kv_len = c.q_start + c.n_queries;
  const AttentionShape shape{c.n_queries, c.q_start,  heads,   kv_heads, c.head_dim,
                             kv_len + 5,  c.window,   c.kv_dtype, c.scale, c.softcap};
  const uint64_t seed = static_cast<uint64_t>(c.head_dim * 1000 + c.n_queries * 100 + c.q_start * 10 + c.window);
  // q·k / sqrt(d) of order 1: q, k ~ N(0, 1/sqrt(d)) · 2.
  const double qk_scale = 2.0 / std::sqrt(std::sqrt(double(c.head_dim)));
  const auto q = random_vector(c.n_queries * heads * c.head_dim, seed, qk_scale);
  auto keys = random_vector(kv_heads * shape.capacity * c.head_dim, seed + 1, qk_scale);
  auto values = random_vector(kv_heads * shape.capacity * c.head_dim, seed + 2);
  // Cache slots past the length, and keys no query may see (before every
  // query's window), hold NaN: reading them would poison the output.
  const int64_t first_visible = c.window > 0 ? std::max<int64_t>(0, c.q_start - c.window + 1) : 0;
  for (int64_t g = 0; g < kv_heads; ++g) {
    for (int64_t j = 0; j < shape.capacity; ++j) {
      if (j < kv_len && j >= first_visible) continue;
      for (int64_t d = 0; d < c.head_dim; ++d) {
        keys[size_t((g * shape.capacity + j) * c.head_dim + d)] = kPoison;
        values[size_t((g * shape.capacity + j) * c.head_dim + d)] = kPoison;
      }
    }
  }
  const std::vector<uint8_t> key_cache = to_cache(keys, c.kv_dtype);
  const std::vector<uint8_t> value_cache = to_cache(values, c.kv_dtype);
  const std::vector<double> want = naive_attention(q, keys, values, shape);

  const Paged paged = to_paged(key_cache, value_cache, shape, c.block_tokens, 2);
  slm::AttentionRun run{0, c.n_queries, c.q_start, paged.table.data()};
  const slm::AttentionBatch batch{std::span(&run, 1), heads, c.window, c.scale, c.softcap};
  std::vector<float> eager(want.size(), kPoison), flash(want.size(), kPoison), scores;
  slm::cpu::attention_eager(q.data(), paged.view, batch, scores, eager.data());
  slm::cpu::attention_flash(q.data(), paged.view, batch, flash.data());
  EXPECT_EQ(scores.size(), size_t(heads * c.n_queries * kv_len)) << "eager materialises [heads, n, kv_len]";
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(eager[i], want[i], 2e-5) << "eager " << name(c) << " element " << i;
    ASSERT_NEAR(flash[i], want[i], 2e-5) << "flash " << name(c) << " element " << i;
  }
}

TEST(Attention, EagerAndFlashMatchNaiveAttention) {
  slm::test::for_each_isa([](slm::cpu::Isa) {
    for (int64_t head_dim : {64, 128}) {
      for (int64_t n : {1, 37}) {
        for (int64_t q_start : {0, 50}) {
          for (int64_t window : {0, 1, 5, 20}) {
            for (slm::DType kv : {slm::DType::F32, slm::DType::F16, slm::DType::BF16}) {
              for (int64_t block : {16, 64, 4096}) {
                check_case({head_dim, n, q_start, window, kv, block});
                if (::testing::Test::HasFatalFailure()) return;
              }
            }
          }
        }
      }
    }
  });
}

// Odd head sizes and lengths that cross flash's tiles of 64 queries × 64
// keys (a key tile also ends where a block does), from a single decoding
// query on, with windows that hide whole key tiles.
TEST(Attention, TileBoundaries) {
  for (const Case& c : {Case{2, 17, 0, 0}, Case{6, 16, 48, 0}, Case{34, 65, 63, 0}, Case{64, 129, 0, 64},
                        Case{64, 1, 200, 65}, Case{64, 33, 31, 17}, Case{34, 65, 63, 9, slm::DType::BF16},
                        Case{6, 33, 31, 17, slm::DType::F16}, Case{64, 7, 70, 0}, Case{64, 8, 70, 0},
                        Case{64, 8, 130, 3, slm::DType::BF16}, Case{64, 200, 0, 70, slm::DType::F16},
                        Case{64, 130, 0, 0, slm::DType::BF16}, Case{64, 130, 5, 0, slm::DType::F32, 16},
                        Case{34, 65, 63, 9, slm::DType::BF16, 16}, Case{64, 7, 70, 30, slm::DType::F16, 16},
                        Case{6, 200, 0, 70, slm::DType::F32, 1}}) {
    check_case(c);
    if (HasFatalFailure()) return;
  }
}

// Gemma's attention: a scale other than 1/√head_dim (query_pre_attn_scalar)
// and scores soft-capped before the softmax, small enough to bend them, on
// the dot-product path (few queries) and the tiled one.
TEST(Attention, ScaleAndSoftcap) {
  for (const Case& c : {Case{64, 1, 50, 0, slm::DType::F32, 64, 0.3f, 1.0f},
                        Case{64, 37, 0, 5, slm::DType::F32, 16, 0.2f, 0.7f},
                        Case{16, 70, 10, 0, slm::DType::BF16, 64, 0.5f, 2.0f},
                        Case{64, 7, 70, 30, slm::DType::F16, 16, 0.0f, 1.5f},
                        Case{34, 65, 63, 9, slm::DType::F32, 64, 0.4f, 0.0f}}) {
    check_case(c);
    if (HasFatalFailure()) return;
  }
}

// Query tiles stack the heads that share a KV head, up to four that divide
// the group: groups of 1 (none), 2, 4, 8 (two stacks of four), 5 and 7
// (one head a tile), across two query tiles and a window.
TEST(Attention, HeadsSharingKeysStackedInTiles) {
  for (const auto& [heads, kv_heads] : {std::pair{4, 4}, {4, 2}, {8, 2}, {8, 1}, {10, 2}, {7, 1}}) {
    for (const Case& c : {Case{64, 70, 5, 0}, Case{32, 129, 0, 40, slm::DType::BF16, 16}}) {
      Case stacked = c;
      stacked.heads = heads;
      stacked.kv_heads = kv_heads;
      check_case(stacked);
      if (HasFatalFailure()) return;
    }
  }
}

// Decoding at depth makes fewer work items than threads; each item's keys
// are then split into parts, folded on their own and merged. The split
// cases (4 threads asked for: two items of three stacked heads, or one for
// a single KV head) hold the reference on every dtype, with windows that
// leave whole parts unseen, blocks shorter than a tile, and a short run of
// queries at depth.
TEST(Attention, KeysSplitIntoPartsWhenDecodingAtDepth) {
  EXPECT_EQ(slm::cpu::key_splits(3, 64, 2), 4);   // SmolLM2 decoding at 4096: 12 parts, 6 a thread
  EXPECT_EQ(slm::cpu::key_splits(1, 64, 2), 8);
  EXPECT_EQ(slm::cpu::key_splits(96, 64, 2), 1);  // 32 sequences: the items suffice
  EXPECT_EQ(slm::cpu::key_splits(3, 7, 2), 1);    // too few keys to split
  EXPECT_GT(slm::cpu::key_splits(2, 16, 4), 1);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(4);
  for (const Case& c : {Case{64, 1, 1000, 0}, Case{64, 1, 1500, 300, slm::DType::BF16, 16},
                        Case{128, 1, 700, 0, slm::DType::F16}, Case{64, 5, 2000, 0, slm::DType::F32, 4096},
                        Case{64, 1, 1100, 0, slm::DType::F32, 64, 0.3f, 1.5f, 4, 1},
                        Case{32, 2, 1300, 1000, slm::DType::BF16, 16, 0.0f, 0.0f, 3, 1}}) {
    check_case(c);
    if (HasFatalFailure()) break;
  }
  omp_set_num_threads(threads);
}

// Several sequences in one call, prefilling and decoding, each with its own
// blocks, give each exactly what it gives alone.
TEST(Attention, BatchOfSequencesEqualsEachAlone) {
  const int64_t hd = 64, heads = 6, kv_heads = 2, bt = 16;
  const std::vector<AttentionShape> shapes{{1, 40, heads, kv_heads, hd, 41, 0},
                                           {37, 0, heads, kv_heads, hd, 37, 0},
                                           {1, 3, heads, kv_heads, hd, 4, 0},
                                           {20, 17, heads, kv_heads, hd, 37, 0}};
  std::vector<Paged> caches;
  std::vector<std::vector<float>> queries;
  int64_t rows = 0, offset = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const AttentionShape& s = shapes[i];
    auto keys = random_vector(kv_heads * s.capacity * hd, 10 + i, 0.7);
    auto values = random_vector(kv_heads * s.capacity * hd, 20 + i);
    caches.push_back(to_paged(to_cache(keys, s.kv_dtype), to_cache(values, s.kv_dtype), s, bt, 0));
    queries.push_back(random_vector(s.n_queries * heads * hd, 30 + i, 0.7));
    rows += s.n_queries;
  }
  // One pool: every sequence's blocks side by side, its table shifted to them.
  std::vector<uint8_t> pool_k, pool_v;
  std::vector<std::vector<int32_t>> tables;
  for (size_t i = 0; i < shapes.size(); ++i) {
    pool_k.insert(pool_k.end(), caches[i].keys.begin(), caches[i].keys.end());
    pool_v.insert(pool_v.end(), caches[i].values.begin(), caches[i].values.end());
    std::vector<int32_t> t = caches[i].table;
    for (int32_t& b : t) b += static_cast<int32_t>(offset);
    tables.push_back(t);
    offset += int64_t(caches[i].keys.size() / 4) / (kv_heads * bt * hd);
  }
  const slm::PagedKV pool{pool_k.data(), pool_v.data(), slm::DType::F32, bt, kv_heads, hd};
  std::vector<float> q;
  std::vector<slm::AttentionRun> runs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    runs.push_back({int64_t(q.size()) / (heads * hd), shapes[i].n_queries, shapes[i].q_start, tables[i].data()});
    q.insert(q.end(), queries[i].begin(), queries[i].end());
  }
  std::vector<float> together(size_t(rows * heads * hd), kPoison);
  slm::cpu::attention_flash(q.data(), pool, {runs, heads, 0}, together.data());
  for (size_t i = 0; i < shapes.size(); ++i) {
    slm::AttentionRun alone{0, shapes[i].n_queries, shapes[i].q_start, caches[i].table.data()};
    std::vector<float> out(queries[i].size(), kPoison);
    slm::cpu::attention_flash(queries[i].data(), caches[i].view, {std::span(&alone, 1), heads, 0}, out.data());
    for (size_t e = 0; e < out.size(); ++e) {
      ASSERT_EQ(together[size_t(runs[i].row0 * heads * hd) + e], out[e]) << "sequence " << i << " element " << e;
    }
  }
}

// One visible key: the output is exactly that key's value, whatever the scores.
TEST(Attention, WindowOfOneReturnsOwnValue) {
  const int64_t hd = 64;
  const AttentionShape shape{3, 4, 3, 1, hd, 7, 1};
  const auto q = random_vector(3 * 3 * hd, 1, 10.0);
  auto keys = random_vector(7 * hd, 2, 10.0);
  auto values = random_vector(7 * hd, 3);
  const Paged paged = to_paged(to_cache(keys, shape.kv_dtype), to_cache(values, shape.kv_dtype), shape, 4, 1);
  slm::AttentionRun run{0, 3, 4, paged.table.data()};
  const slm::AttentionBatch batch{std::span(&run, 1), 3, 1};
  std::vector<float> out(3 * 3 * hd), scores;
  for (int impl = 0; impl < 2; ++impl) {
    if (impl == 0) {
      slm::cpu::attention_eager(q.data(), paged.view, batch, scores, out.data());
    } else {
      slm::cpu::attention_flash(q.data(), paged.view, batch, out.data());
    }
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t h = 0; h < 3; ++h) {
        for (int64_t d = 0; d < hd; ++d) {
          ASSERT_NEAR(out[size_t((i * 3 + h) * hd + d)], values[size_t((4 + i) * hd + d)], 1e-6) << impl;
        }
      }
    }
  }
}

}  // namespace
