// Gemma 3 text (Gemma3ForCausalLM): Gemma's block (RMSNorm with (1 + weight),
// a norm after attention and after the MLP, GeGLU, embeddings scaled by
// sqrt(hidden_size)) with a per-head q/k norm; sliding-window layers in
// layer_types (older config.json: every sliding_window_pattern-th layer is
// full) rotate with their own base, rope_local_base_freq, and the full
// layers with rope_theta and rope_scaling. No soft caps unless config.json
// sets them.
#include "model/arch/architecture.h"

#include <algorithm>

namespace slm {

namespace {

// The period of the layer types when they repeat as "N-1 sliding, 1 full",
// which transformers before layer_types reads as sliding_window_pattern; 0 if none.
int64_t layer_pattern(const ModelConfig& c) {
  if (c.sliding_layers.empty()) return 0;
  const auto it = std::find(c.sliding_layers.begin(), c.sliding_layers.end(), false);
  const auto period = static_cast<size_t>(it - c.sliding_layers.begin()) + 1;
  for (size_t l = 0; l < c.sliding_layers.size(); ++l) {
    if (c.sliding_layers[l] != ((l + 1) % period != 0)) return 0;
  }
  return static_cast<int64_t>(period);
}

}  // namespace

extern const Architecture kGemma3;
const Architecture kGemma3{
    "gemma3_text",
    "Gemma3ForCausalLM",
    "hidden_activation",
    true,
    [](ModelConfig& c, bool attention_bias) {
      arch::set_gemma_options(c, attention_bias);
      c.qk_norm = true;
    },
    [](const JsonFields& f, ModelConfig& c) {
      arch::read_gemma_fields(f, c, 0.0, 0.0);
      c.rope_theta = f.number("rope_theta", 1.0, 1e12, 1e6);
      c.rope_local_theta = f.number("rope_local_base_freq", 1.0, 1e12, 10000.0);
      const char* pattern_key = f.has("sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
      arch::read_layer_types(f, c, f.integer(pattern_key, 1, 1024, int64_t{6}));
    },
    [](const ModelConfig& c, nlohmann::json& j) {
      arch::write_gemma_fields(c, j);
      j["rope_local_base_freq"] = c.rope_local_theta > 0 ? c.rope_local_theta : c.rope_theta;
      if (const int64_t pattern = layer_pattern(c); pattern > 0) j["sliding_window_pattern"] = pattern;
    },
    arch::listed_layer_window,
};

}  // namespace slm
