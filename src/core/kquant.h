// The block formats of llama.cpp (ggml-common.h) that slm widens to f32 once,
// at load, having no kernels for them: the k-quants GGUF downloads mostly use
// (Q4_K_M files mix Q4_K, Q5_K and Q6_K: superblocks of 256 weights in 8 or
// 16 sub-blocks, each with its own 6- or 8-bit scale), and the 32-weight
// Q4_1, Q5_0 and Q5_1 that llama.cpp's quantizer falls back to for rows that
// are not whole superblocks (a Q4_K_M file of a 576-wide model holds Q5_0).
#pragma once

#include <cstddef>
#include <cstdint>

namespace slm {

inline constexpr int64_t kKQuantBlock = 256;

// w = d·scale_j·q − dmin·min_j, q 4 bits; scales and mins 6 bits, packed in 12 bytes.
struct BlockQ4K {
  uint16_t d, dmin;  // f16
  uint8_t scales[12];
  uint8_t qs[128];
};
// As Q4_K with a fifth bit of each q in qh.
struct BlockQ5K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
// w = d·scale_j·(q − 32), q 6 bits (4 in ql, 2 in qh), 16 int8 scales.
struct BlockQ6K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
// w = d·q + m, q 4 bits (the low nibbles are weights 0-15, the high 16-31).
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
// w = d·(q − 16), q 5 bits: the nibbles as Q4_1, bit e of qh (little-endian) the fifth of weight e.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
// w = d·q + m, q as Q5_0's.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24,
              "32-weight blocks must match ggml's layout");
static_assert(sizeof(BlockQ4K) == 144 && sizeof(BlockQ5K) == 176 && sizeof(BlockQ6K) == 210,
              "k-quant blocks must match ggml's layout");

// n must be a multiple of kKQuantBlock; `blocks` need no alignment.
void dequantize_q4_k(const void* blocks, int64_t n, float* out);
void dequantize_q5_k(const void* blocks, int64_t n, float* out);
void dequantize_q6_k(const void* blocks, int64_t n, float* out);
// n must be a multiple of 32.
void dequantize_q4_1(const void* blocks, int64_t n, float* out);
void dequantize_q5_0(const void* blocks, int64_t n, float* out);
void dequantize_q5_1(const void* blocks, int64_t n, float* out);

}  // namespace slm
