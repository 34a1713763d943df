// Qwen3: a per-head RMSNorm on q and k before the rotary embedding;
// attention_bias puts a bias on all four projections; Qwen2's sliding window.
#include "model/arch/architecture.h"

namespace slm {

extern const Architecture kQwen3;
const Architecture kQwen3{
    "qwen3",
    "Qwen3ForCausalLM",
    "hidden_act",
    false,
    [](ModelConfig& c, bool attention_bias) {
      c.attention_bias = attention_bias;
      c.output_bias = attention_bias;
      c.qk_norm = true;
    },
    arch::read_qwen_window,
    [](const ModelConfig& c, nlohmann::json& j) {
      j["attention_bias"] = c.attention_bias;
      arch::write_qwen_window(c, j);
    },
    arch::qwen_layer_window,
};

}  // namespace slm
