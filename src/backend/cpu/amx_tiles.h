// The AMX tile operations the GEMMs of simd_amx.cpp use, twice: `AmxTiles`
// issues the instructions (usable only in a file compiled for amx-tile,
// amx-bf16 and amx-int8), `AmxTileModel` computes what they compute in plain C++, so
// that the kernels written against them are tested on CPUs without AMX. The
// kernels are templates over which of the two they call; only AmxTiles is
// ever dispatched to.
//
// Both use one tile assignment, the 2×2 blocking of the kernels: C tiles
// 0..3 (row block i, column block j at 2i + j), A tiles 4 and 5 (row blocks),
// B tiles 6 and 7 (column blocks). A tile holds up to 16 rows of up to 64
// bytes; `TileShape`s set them per role for a product.
//
// Include below a file's target pragma, as simd_avx512_inline.h, after
// including the headers it names above the pragma.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include <slm/error.h>

#include "core/half.h"

namespace slm::cpu {
namespace {

struct TileShape {
  int rows;   // ≤ 16
  int bytes;  // of a row, ≤ 64
};

// The shapes of the three roles for one product: C[rows][bytes/4] (f32 or
// int32) += A[rows][bytes] · B[bytes/4 of A][bytes of C] with B in pairs
// (bf16: row p holds, per column, its values at 2p and 2p+1) or quads (int8).
struct TileShapes {
  TileShape c, a, b;
};

// The 64-byte operand of ldtilecfg (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes[16] = {};
  uint8_t rows[16] = {};

  explicit TileConfig(const TileShapes& shapes) {
    for (int t = 0; t < 8; ++t) {
      const TileShape& shape = t < 4 ? shapes.c : t < 6 ? shapes.a : shapes.b;
      bytes[t] = static_cast<uint16_t>(shape.bytes);
      rows[t] = static_cast<uint8_t>(shape.rows);
    }
  }
};
static_assert(sizeof(TileConfig) == 64);

// The instructions. tileloadd and friends name their tile in the opcode, so
// each tile number is spelled out. GCC 12's intrinsics tell the compiler
// that ldtilecfg reads 8 bytes of its 64 and that tileloadd reads no memory
// at all, so stores to what they read could be moved past them or dropped:
// the configuration is one whole operand here, and a compiler barrier comes
// before each tile load.
struct AmxTiles {
  static void configure(const TileShapes& shapes) {
    const TileConfig config(shapes);
    __asm__ volatile("ldtilecfg %0" ::"m"(config));
  }
  static void release() { _tile_release(); }
  template <int I>
  static void load_a(const void* at, int64_t stride) {
    __asm__ volatile("" ::: "memory");
    if constexpr (I == 0) _tile_loadd(4, at, stride);
    else _tile_loadd(5, at, stride);
  }
  template <int J>
  static void load_b(const void* at, int64_t stride) {
    __asm__ volatile("" ::: "memory");
    if constexpr (J == 0) _tile_loadd(6, at, stride);
    else _tile_loadd(7, at, stride);
  }
  template <int I, int J>
  static void zero_c() {
    if constexpr (I == 0 && J == 0) _tile_zero(0);
    else if constexpr (I == 0) _tile_zero(1);
    else if constexpr (J == 0) _tile_zero(2);
    else _tile_zero(3);
  }
  template <int I, int J>
  static void store_c(void* at, int64_t stride) {
    if constexpr (I == 0 && J == 0) _tile_stored(0, at, stride);
    else if constexpr (I == 0) _tile_stored(1, at, stride);
    else if constexpr (J == 0) _tile_stored(2, at, stride);
    else _tile_stored(3, at, stride);
  }
  // C(I,J) += A(I)·B(J), bf16 pairs into f32.
  template <int I, int J>
  static void dot_bf16() {
    if constexpr (I == 0 && J == 0) _tile_dpbf16ps(0, 4, 6);
    else if constexpr (I == 0) _tile_dpbf16ps(1, 4, 7);
    else if constexpr (J == 0) _tile_dpbf16ps(2, 5, 6);
    else _tile_dpbf16ps(3, 5, 7);
  }
  // C(I,J) += A(I)·B(J), signed bytes in quads into int32.
  template <int I, int J>
  static void dot_s8s8() {
    if constexpr (I == 0 && J == 0) _tile_dpbssd(0, 4, 6);
    else if constexpr (I == 0) _tile_dpbssd(1, 4, 7);
    else if constexpr (J == 0) _tile_dpbssd(2, 5, 6);
    else _tile_dpbssd(3, 5, 7);
  }
};

// The same operations on eight 1 KiB arrays per thread, as the Intel SDM
// defines them: loads fill `rows` rows of `bytes` and zero the rest, dot
// products accumulate each row of A against B's rows in order (bf16: both
// products of a pair rounded to f32 and added, as tdpbf16ps does, less its
// flushing of denormals), and any use outside the configured shapes, or a
// product of mismatched shapes, fails as the instruction would fault.
struct AmxTileModel {
  struct State {
    bool configured = false;
    TileShapes shapes{};
    alignas(64) uint8_t tiles[8][16][64] = {};
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static const TileShape& shape(int t) {
    const State& s = state();
    if (!s.configured) fail("AMX model: tile ", t, " used without a configuration");
    return t < 4 ? s.shapes.c : t < 6 ? s.shapes.a : s.shapes.b;
  }
  static void configure(const TileShapes& shapes) {
    for (const TileShape& shape : {shapes.c, shapes.a, shapes.b}) {
      if (shape.rows < 1 || shape.rows > 16 || shape.bytes < 4 || shape.bytes > 64 || shape.bytes % 4) {
        fail("AMX model: tile shape ", shape.rows, "x", shape.bytes, " out of range");
      }
    }
    state().shapes = shapes;
    state().configured = true;
  }
  static void release() { state() = State{}; }
  static void load(int t, const void* at, int64_t stride) {
    const TileShape& s = shape(t);
    std::memset(state().tiles[t], 0, sizeof state().tiles[t]);
    for (int r = 0; r < s.rows; ++r) std::memcpy(state().tiles[t][r], static_cast<const char*>(at) + r * stride, size_t(s.bytes));
  }
  static void store(int t, void* at, int64_t stride) {
    const TileShape& s = shape(t);
    for (int r = 0; r < s.rows; ++r) std::memcpy(static_cast<char*>(at) + r * stride, state().tiles[t][r], size_t(s.bytes));
  }
  template <class T>
  static T element(int t, int row, int index) {
    T value;
    std::memcpy(&value, state().tiles[t][row] + index * sizeof(T), sizeof(T));
    return value;
  }
  // Checks C(c) += A(a)·B(b) for `unit`-byte groups (4: pairs of bf16 or
  // quads of bytes) and returns the depth in groups.
  static int depth(int c, int a, int b) {
    const TileShape &sc = shape(c), &sa = shape(a), &sb = shape(b);
    if (sa.rows != sc.rows || sb.bytes != sc.bytes || sb.rows != sa.bytes / 4) {
      fail("AMX model: product of shapes ", sc.rows, "x", sc.bytes, " += ", sa.rows, "x", sa.bytes, " · ", sb.rows, "x",
           sb.bytes);
    }
    return sb.rows;
  }
  template <int I>
  static void load_a(const void* at, int64_t stride) { load(4 + I, at, stride); }
  template <int J>
  static void load_b(const void* at, int64_t stride) { load(6 + J, at, stride); }
  template <int I, int J>
  static void zero_c() {
    shape(2 * I + J);
    std::memset(state().tiles[2 * I + J], 0, sizeof state().tiles[0]);
  }
  template <int I, int J>
  static void store_c(void* at, int64_t stride) { store(2 * I + J, at, stride); }
  template <int I, int J>
  static void dot_bf16() {
    const int c = 2 * I + J, a = 4 + I, b = 6 + J;
    const int pairs = depth(c, a, b);
    for (int m = 0; m < shape(c).rows; ++m) {
      for (int n = 0; n < shape(c).bytes / 4; ++n) {
        float sum = element<float>(c, m, n);
        for (int p = 0; p < pairs; ++p) {
          const float even = bf16_to_f32(element<uint16_t>(a, m, 2 * p)) * bf16_to_f32(element<uint16_t>(b, p, 2 * n));
          const float odd =
              bf16_to_f32(element<uint16_t>(a, m, 2 * p + 1)) * bf16_to_f32(element<uint16_t>(b, p, 2 * n + 1));
          sum += even + odd;
        }
        std::memcpy(state().tiles[c][m] + 4 * n, &sum, sizeof sum);
      }
    }
  }
  template <int I, int J>
  static void dot_s8s8() {
    const int c = 2 * I + J, a = 4 + I, b = 6 + J;
    const int quads = depth(c, a, b);
    for (int m = 0; m < shape(c).rows; ++m) {
      for (int n = 0; n < shape(c).bytes / 4; ++n) {
        int32_t sum = element<int32_t>(c, m, n);
        for (int q = 0; q < quads; ++q) {
          for (int i = 0; i < 4; ++i) sum += int32_t(element<int8_t>(a, m, 4 * q + i)) * element<int8_t>(b, q, 4 * n + i);
        }
        std::memcpy(state().tiles[c][m] + 4 * n, &sum, sizeof sum);
      }
    }
  }
};

}  // namespace
}  // namespace slm::cpu
