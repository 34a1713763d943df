// Qwen2 / Qwen2.5: q/k/v biases always, none on o_proj; a sliding window
// (use_sliding_window) on the layers from max_window_layers on.
#include "model/arch/architecture.h"

namespace slm {

extern const Architecture kQwen2;
const Architecture kQwen2{
    "qwen2",
    "Qwen2ForCausalLM",
    "hidden_act",
    false,
    [](ModelConfig& c, bool) {
      c.attention_bias = true;
      c.output_bias = false;
      c.qk_norm = false;
    },
    arch::read_qwen_window,
    arch::write_qwen_window,
    arch::qwen_layer_window,
};

}  // namespace slm
