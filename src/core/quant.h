// Block quantization of weights (applied at load with --dtype q8 / q4):
// each run of 32 consecutive weights of a row shares one f16 scale.
//   q8: 8-bit signed values, w = scale · q            (34 bytes per 32 weights)
//   q4: 4-bit values,        w = scale · (q - 8)      (18 bytes per 32 weights)
// q4 packs elements j and j+16 of a block into the low and high nibble of byte j.
#pragma once

#include <cstddef>
#include <cstdint>

namespace slm {

inline constexpr int64_t kQuantBlock = 32;

struct BlockQ8 {
  uint16_t scale;  // f16
  int8_t q[32];
};

struct BlockQ4 {
  uint16_t scale;  // f16
  uint8_t q[16];
};

static_assert(sizeof(BlockQ8) == 34 && sizeof(BlockQ4) == 18, "quantized blocks must be packed");

// n must be a multiple of kQuantBlock.
void quantize_q8(const float* x, int64_t n, BlockQ8* out);
void quantize_q4(const float* x, int64_t n, BlockQ4* out);
void dequantize_q8(const BlockQ8* blocks, int64_t n, float* out);
void dequantize_q4(const BlockQ4* blocks, int64_t n, float* out);

}  // namespace slm
