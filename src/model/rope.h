// Rotary position embedding frequencies, shared by the inference decoder and
// the training forward so both rotate by exactly the same angles.
#pragma once

#include <slm/model.h>

#include <vector>

namespace slm {

// inv_freq[i] = rope_theta^(-2i/head_dim), rope_scaling applied, as Hugging
// Face transformers computes it; head_dim/2 entries. `local`: those of the
// sliding layers, rope_local_theta^(-2i/head_dim) unscaled (Gemma 3).
std::vector<float> rope_inverse_frequencies(const ModelConfig& config, bool local = false);

}  // namespace slm
