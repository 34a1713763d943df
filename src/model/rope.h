// Rotary position embedding frequencies, shared by the inference decoder and
// the training forward so both rotate by exactly the same angles.
#pragma once

#include <slm/model.h>

#include <vector>

namespace slm {

// Which of a model's rotary tables: the main one (rope_scaling applied;
// longrope's short factors), the sliding layers' own base (Gemma 3), or
// longrope's long factors.
enum class RopeTable { Main, Local, Long };

// inv_freq[i] = base^(-2i/head_dim), rope_scaling applied, as Hugging Face
// transformers computes it; head_dim/2 entries. Local: rope_local_theta,
// unscaled. Long: rope_theta with longrope's long factors.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config, RopeTable table = RopeTable::Main);

}  // namespace slm
