#include "core/quant.h"

#include "core/half.h"

#include <algorithm>
#include <cmath>

namespace slm {

namespace {

// x rounded to the nearest integer level in [lo, hi]; NaN (a NaN weight, or
// an infinite one against a zero inverse scale) becomes the level of zero,
// since casting NaN to an integer is undefined.
float level_of(float x, float lo, float hi, float zero) { return std::isnan(x) ? zero : std::clamp(std::nearbyint(x), lo, hi); }

}  // namespace

void quantize_q8(const float* x, int64_t n, BlockQ8* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
    // The scale is stored in f16: quantize against the rounded value so
    // dequantization uses exactly the scale the values were chosen for.
    const float scale = f16_to_f32(f32_to_f16(amax / 127.0f));
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    out[b].scale = f32_to_f16(scale);
    for (int i = 0; i < kQuantBlock; ++i) {
      out[b].q[i] = static_cast<int8_t>(level_of(v[i] * inverse, -127.0f, 127.0f, 0.0f));
    }
  }
}

void quantize_q4(const float* x, int64_t n, BlockQ4* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    // The value of largest magnitude maps to -8, so the full range -8..7 is used.
    float extreme = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i) {
      if (std::fabs(v[i]) > std::fabs(extreme)) extreme = v[i];
    }
    const float scale = f16_to_f32(f32_to_f16(extreme / -8.0f));
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    out[b].scale = f32_to_f16(scale);
    auto level = [&](float value) {
      return static_cast<uint8_t>(level_of(value * inverse + 8.0f, 0.0f, 15.0f, 8.0f));
    };
    for (int i = 0; i < kQuantBlock / 2; ++i) {
      out[b].q[i] = static_cast<uint8_t>(level(v[i]) | (level(v[i + kQuantBlock / 2]) << 4));
    }
  }
}

void dequantize_q8(const BlockQ8* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float scale = f16_to_f32(blocks[b].scale);
    for (int i = 0; i < kQuantBlock; ++i) out[b * kQuantBlock + i] = scale * static_cast<float>(blocks[b].q[i]);
  }
}

void dequantize_q4(const BlockQ4* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float scale = f16_to_f32(blocks[b].scale);
    for (int i = 0; i < kQuantBlock / 2; ++i) {
      out[b * kQuantBlock + i] = scale * static_cast<float>((blocks[b].q[i] & 0x0f) - 8);
      out[b * kQuantBlock + i + kQuantBlock / 2] = scale * static_cast<float>((blocks[b].q[i] >> 4) - 8);
    }
  }
}

}  // namespace slm
