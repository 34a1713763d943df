// The tensors a config.json implies, with their Hugging Face names and
// shapes, written once: loading, saving (named_weights) and `slm create`
// all walk this list, so a family's tensor names live in one place. Where a
// family fuses projections in its checkpoint (Phi-3's qkv_proj and
// gate_up_proj), fused_tensors() says which of these names one checkpoint
// tensor holds, row after row.
#pragma once

#include <slm/model.h>

#include <string>
#include <vector>

namespace slm {

// Calls f(name, tensor, shape, matrix) for every tensor of `w` (Weights or
// const Weights, its layers already sized) in the order checkpoints list
// them; `matrix` is false for norm weights and biases (kept in f32). A tied
// lm_head is left out.
template <class W, class F>
void for_each_weight(W& w, const ModelConfig& c, F&& f) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  f(std::string("model.embed_tokens.weight"), w.embed_tokens, std::vector<int64_t>{c.vocab_size, H}, true);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    f(p + "input_layernorm.weight", L.attn_norm, std::vector<int64_t>{H}, false);
    f(p + "self_attn.q_proj.weight", L.q_proj, std::vector<int64_t>{q, H}, true);
    f(p + "self_attn.k_proj.weight", L.k_proj, std::vector<int64_t>{kv, H}, true);
    f(p + "self_attn.v_proj.weight", L.v_proj, std::vector<int64_t>{kv, H}, true);
    if (c.attention_bias) {
      f(p + "self_attn.q_proj.bias", L.q_bias, std::vector<int64_t>{q}, false);
      f(p + "self_attn.k_proj.bias", L.k_bias, std::vector<int64_t>{kv}, false);
      f(p + "self_attn.v_proj.bias", L.v_bias, std::vector<int64_t>{kv}, false);
    }
    if (c.qk_norm) {
      f(p + "self_attn.q_norm.weight", L.q_norm, std::vector<int64_t>{hd}, false);
      f(p + "self_attn.k_norm.weight", L.k_norm, std::vector<int64_t>{hd}, false);
    }
    f(p + "self_attn.o_proj.weight", L.o_proj, std::vector<int64_t>{H, q}, true);
    if (c.output_bias) f(p + "self_attn.o_proj.bias", L.o_bias, std::vector<int64_t>{H}, false);
    // Gemma's post_attention_layernorm follows attention; Llama's is the MLP's pre-norm.
    if (c.post_norms) {
      f(p + "post_attention_layernorm.weight", L.post_attn_norm, std::vector<int64_t>{H}, false);
      f(p + "pre_feedforward_layernorm.weight", L.mlp_norm, std::vector<int64_t>{H}, false);
    } else {
      f(p + "post_attention_layernorm.weight", L.mlp_norm, std::vector<int64_t>{H}, false);
    }
    f(p + "mlp.gate_proj.weight", L.gate_proj, std::vector<int64_t>{I, H}, true);
    f(p + "mlp.up_proj.weight", L.up_proj, std::vector<int64_t>{I, H}, true);
    f(p + "mlp.down_proj.weight", L.down_proj, std::vector<int64_t>{H, I}, true);
    if (c.post_norms) f(p + "post_feedforward_layernorm.weight", L.post_mlp_norm, std::vector<int64_t>{H}, false);
  }
  f(std::string("model.norm.weight"), w.final_norm, std::vector<int64_t>{H}, false);
  if (!c.tie_word_embeddings) f(std::string("lm_head.weight"), w.lm_head, std::vector<int64_t>{c.vocab_size, H}, true);
}

// A checkpoint tensor that holds the rows of several of for_each_weight's.
struct FusedTensor {
  std::string name;                // "model.layers.0.self_attn.qkv_proj.weight"
  std::vector<std::string> parts;  // q_proj, k_proj, v_proj's names, in row order
};
// Empty unless config.fused_projections.
std::vector<FusedTensor> fused_tensors(const ModelConfig& config);

}  // namespace slm
