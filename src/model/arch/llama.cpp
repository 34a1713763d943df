// Llama 1/2/3, SmolLM, TinyLlama: attention_bias puts a bias on all four
// attention projections; no q/k norm, no sliding window.
#include "model/arch/architecture.h"

namespace slm {

extern const Architecture kLlama;
const Architecture kLlama{
    "llama",
    "LlamaForCausalLM",
    "hidden_act",
    false,
    [](ModelConfig& c, bool attention_bias) {
      c.attention_bias = attention_bias;
      c.output_bias = attention_bias;
      c.qk_norm = false;
    },
    arch::read_no_window,
    [](const ModelConfig& c, nlohmann::json& j) { j["attention_bias"] = c.attention_bias; },
    [](const ModelConfig&, int64_t) -> int64_t { return 0; },
};

}  // namespace slm
