// Phi-3 and Phi-3.5 (Phi3ForCausalLM): Llama's block with q/k/v fused into
// one qkv_proj and gate/up into one gate_up_proj in the checkpoint (split
// into the usual matrices at load, fused again when written), no biases,
// a sliding window on every layer when config.json sets one, and longrope
// scaling (short and long factors, cos and sin scaled) in the 128k models.
#include "model/arch/architecture.h"

namespace slm {

extern const Architecture kPhi3;
const Architecture kPhi3{
    "phi3",
    "Phi3ForCausalLM",
    "hidden_act",
    false,
    [](ModelConfig& c, bool) {
      c.attention_bias = false;
      c.output_bias = false;
      c.qk_norm = false;
      c.fused_projections = true;
    },
    [](const JsonFields& f, ModelConfig& c) {
      arch::read_sliding_window(f, c);
      c.rms_norm_eps = f.number("rms_norm_eps", 0.0, 1.0, 1e-5);  // Phi3Config's default
      if (c.rope_scaling != RopeScaling::None && c.rope_scaling != RopeScaling::LongRope) {
        fail(f.file(), ": rope_scaling of phi3 must be longrope or null (as transformers' Phi3Config)");
      }
      const double rotary = f.number("partial_rotary_factor", 0.0, 1.0, 1.0);
      if (rotary != 1.0) {
        fail(f.file(), ": partial_rotary_factor ", rotary, " is not supported (slm rotates whole heads: 1.0)");
      }
      if (c.rope_scaling != RopeScaling::LongRope) {
        c.rope_original_max_position_embeddings =
            f.integer("original_max_position_embeddings", 1, 1 << 24, c.max_position_embeddings);
      }
    },
    [](const ModelConfig& c, nlohmann::json& j) {
      arch::write_sliding_window(c, j);
      j["original_max_position_embeddings"] = c.rope_original_max_position_embeddings > 0
                                                  ? c.rope_original_max_position_embeddings
                                                  : c.max_position_embeddings;
      // Phi3Config's pad_token_id defaults to 32000, which an embedding of a
      // smaller vocabulary refuses as its padding index.
      j["pad_token_id"] = nullptr;
    },
    arch::every_layer_window,
};

}  // namespace slm
