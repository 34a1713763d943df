// Mistral: no biases, one sliding window on every layer.
#include "model/arch/architecture.h"

namespace slm {

extern const Architecture kMistral;
const Architecture kMistral{
    "mistral",
    "MistralForCausalLM",
    "hidden_act",
    false,
    [](ModelConfig& c, bool) {
      c.attention_bias = false;
      c.output_bias = false;
      c.qk_norm = false;
    },
    arch::read_sliding_window,
    arch::write_sliding_window,
    arch::every_layer_window,
};

}  // namespace slm
