#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace slm {

std::vector<float> rope_inverse_frequencies(const ModelConfig& c, RopeTable table) {
  const int64_t half = c.head_dim / 2;
  const bool local = table == RopeTable::Local;
  // The sliding layers' own base is never scaled.
  const RopeScaling scaling = local ? RopeScaling::None : c.rope_scaling;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    double f = 1.0 / std::pow(local ? c.rope_local_theta : c.rope_theta, static_cast<double>(exponent));
    if (scaling == RopeScaling::Linear) {
      f /= c.rope_factor;
    } else if (scaling == RopeScaling::Llama3) {
      const double old_context = static_cast<double>(c.rope_original_max_position_embeddings);
      const double low_wavelen = old_context / c.rope_low_freq_factor;
      const double high_wavelen = old_context / c.rope_high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= c.rope_factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_context / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1.0 - smooth) * f / c.rope_factor + smooth * f;
      }
    } else if (scaling == RopeScaling::LongRope) {
      f /= static_cast<double>((table == RopeTable::Long ? c.rope_long_factor : c.rope_short_factor).at(static_cast<size_t>(i)));
    }
    if (!c.rope_freq_factors.empty()) f /= static_cast<double>(c.rope_freq_factors.at(static_cast<size_t>(i)));
    inv[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return inv;
}

}  // namespace slm
