// Gemma 2 (Gemma2ForCausalLM): Gemma's block (RMSNorm with (1 + weight), a
// norm after attention and after the MLP, GeGLU, embeddings scaled by
// sqrt(hidden_size)), attention scores scaled by query_pre_attn_scalar^-1/2
// and soft-capped (attn_logit_softcapping, default 50), logits soft-capped
// (final_logit_softcapping, default 30), and a sliding window on the even
// layers (or those layer_types names). One rotary base.
#include "model/arch/architecture.h"

namespace slm {

extern const Architecture kGemma2;
const Architecture kGemma2{
    "gemma2",
    "Gemma2ForCausalLM",
    "hidden_activation",
    true,
    [](ModelConfig& c, bool attention_bias) {
      arch::set_gemma_options(c, attention_bias);
      c.qk_norm = false;
      if (c.attn_logit_softcapping == 0) c.attn_logit_softcapping = 50.0;
      if (c.final_logit_softcapping == 0) c.final_logit_softcapping = 30.0;
    },
    [](const JsonFields& f, ModelConfig& c) {
      arch::read_gemma_fields(f, c, 50.0, 30.0);
      arch::read_layer_types(f, c, 2);
    },
    arch::write_gemma_fields,
    arch::listed_layer_window,
};

}  // namespace slm
