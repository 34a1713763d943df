// Decoding's q8/q4 dot products on 256-bit registers (the avx2 and avx2vnni
// paths): x arranged once per product, and the loops over a thread's rows.
// Each path supplies the step that multiplies a block (q8) or a pair of
// blocks (q4): vpmaddubsw and vpmaddwd on AVX2, vpdpbusd with AVX-VNNI.
// Include it after the file's `#pragma GCC target`, as simd_x86_inline.h;
// its includers name <algorithm> and <cstring> above the pragma.
#pragma once

#include "backend/cpu/simd_x86_inline.h"

namespace slm::cpu {
namespace {

// x in two forms, one after the other. The q8 products read it per block:
// its 32 values, its scale as f32, and -128·Σx, the start of the block's
// int32 sums that takes back out the 128 the VNNI step adds to the weights
// to read them unsigned.
struct ArrangedBlock {
  int8_t q[32];
  float scale;
  int32_t minus_128_sum;
  int32_t unused[2];
};

// The q4 products read it per pair of blocks, in the order a q4 block
// stores its levels (element j in the low nibble of byte j, j + 16 in the
// high one): `low` holds x_0..15 of both blocks, `high` x_16..31, so the
// nibble bytes of two blocks loaded side by side multiply them as they
// stand. A block's sums land in four lanes, which hold its scale, and
// -8·Σx (q4 levels are w + 8) starts the first of them. An odd last block
// pairs with zeros.
struct ArrangedPair {
  int8_t low[32];
  int8_t high[32];
  float scale[8];
  int32_t minus_8_sum[8];
};

int64_t blocks_bytes(int64_t k) { return k / kQuantBlock * static_cast<int64_t>(sizeof(ArrangedBlock)); }

int64_t arranged_bytes(int64_t k) {
  return blocks_bytes(k) + (k / kQuantBlock + 1) / 2 * static_cast<int64_t>(sizeof(ArrangedPair));
}

void arrange_x(const BlockQ8* x, int64_t k, void* out) {
  auto* blocks = static_cast<ArrangedBlock*>(out);
  auto* pairs = reinterpret_cast<ArrangedPair*>(static_cast<char*>(out) + blocks_bytes(k));
  std::memset(out, 0, static_cast<size_t>(arranged_bytes(k)));
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    int32_t sum = 0;
    for (int i = 0; i < kQuantBlock; ++i) sum += x[b].q[i];
    const float scale = scale_of(x[b].scale);
    std::memcpy(blocks[b].q, x[b].q, sizeof blocks[b].q);
    blocks[b].scale = scale;
    blocks[b].minus_128_sum = -128 * sum;
    ArrangedPair& pair = pairs[b / 2];
    const int64_t half = b % 2;
    std::memcpy(pair.low + 16 * half, x[b].q, 16);
    std::memcpy(pair.high + 16 * half, x[b].q + 16, 16);
    std::fill_n(pair.scale + 4 * half, 4, scale);
    pair.minus_8_sum[4 * half] = -8 * sum;
  }
}

// The nibble bytes of two q4 blocks side by side (Two), or of a last block
// with zeros above it.
template <bool Two>
[[gnu::always_inline]] inline __m256i q4_pair_bytes(const BlockQ4* w) {
  const __m256i first = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[0].q)));
  if constexpr (!Two) return first;
  return _mm256_inserti128_si256(first, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[1].q)), 1);
}

// The pair's weight scales times x's, each over its block's four lanes.
template <bool Two>
[[gnu::always_inline]] inline __m256 q4_pair_scales(const ArrangedPair& x, const BlockQ4* w) {
  __m128i scales = _mm_cvtsi32_si128(w[0].scale);
  if constexpr (Two) scales = _mm_insert_epi16(scales, w[1].scale, 1);
  const __m256 w_scales = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(scales)),
                                                   _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  return _mm256_mul_ps(w_scales, _mm256_loadu_ps(x.scale));
}

// out[r] = Σ x·w_r for `rows` q8 rows: two blocks a step in two chains.
template <void (*AddBlock)(const ArrangedBlock&, const BlockQ8&, __m256&)>
void q8_arranged_rows(const void* arranged, const BlockQ8* w, int64_t k, int64_t rows, float* out) {
  const auto* x = static_cast<const ArrangedBlock*>(arranged);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t r = 0; r < rows; ++r) {
    const BlockQ8* row = w + r * blocks;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      prefetch_ahead<2 * sizeof(BlockQ8)>(row + b);
      AddBlock(x[b], row[b], a0);
      AddBlock(x[b + 1], row[b + 1], a1);
    }
    if (b < blocks) AddBlock(x[b], row[b], a0);
    out[r] = horizontal_sum(_mm256_add_ps(a0, a1));
  }
}

// out[r] = Σ x·w_r for `rows` q4 rows: two pairs a step in two chains.
// Pair::add<Two>(x pair, w, total) adds a pair's products, or a last block's.
template <class Pair>
void q4_arranged_rows(const void* arranged, const BlockQ4* w, int64_t k, int64_t rows, float* out) {
  const auto* x = reinterpret_cast<const ArrangedPair*>(static_cast<const char*>(arranged) + blocks_bytes(k));
  const int64_t blocks = k / kQuantBlock;
  for (int64_t r = 0; r < rows; ++r) {
    const BlockQ4* row = w + r * blocks;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t b = 0;
    for (; b + 4 <= blocks; b += 4) {
      prefetch_ahead<4 * sizeof(BlockQ4)>(row + b);
      Pair::template add<true>(x[b / 2], row + b, a0);
      Pair::template add<true>(x[b / 2 + 1], row + b + 2, a1);
    }
    if (b + 2 <= blocks) {
      Pair::template add<true>(x[b / 2], row + b, a0);
      b += 2;
    }
    if (b < blocks) Pair::template add<false>(x[b / 2], row + b, a1);
    out[r] = horizontal_sum(_mm256_add_ps(a0, a1));
  }
}

}  // namespace
}  // namespace slm::cpu
