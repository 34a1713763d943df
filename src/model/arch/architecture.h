// What differs between model families, described once per family (one short
// file each in this folder, as mlx-lm has models/llama.py): config.json's
// names for the family, which projections carry biases, q/k norm, the norms
// and activation of a block (Gemma's (1 + weight) norms, post-norms, GeGLU),
// soft-capping, which layers slide their attention window. The options are
// ModelConfig's; the decoder implements each once, and tensor names follow
// from them.
#pragma once

#include <slm/model.h>

#include "io/json_fields.h"

#include <string_view>
#include <vector>

namespace slm {

struct Architecture {
  std::string_view model_type;  // config.json's model_type
  std::string_view hf_class;    // config.json's architectures entry
  // config.json's name for the MLP activation (hidden_act; Gemma's hidden_activation).
  const char* activation_field;
  bool tied_by_default;  // tie_word_embeddings when config.json leaves it out
  // Sets the family's fixed structure (biases from config.json's
  // attention_bias where they are an option, q/k norm, norms, activation and
  // the defaults of its own fields).
  void (*set_options)(ModelConfig& c, bool attention_bias);
  // Reads the family's own fields (sliding window, soft caps, ...).
  void (*read_fields)(const JsonFields& f, ModelConfig& c);
  // Writes the family's own fields back (attention_bias, sliding window, ...)
  // as transformers reads them.
  void (*write_fields)(const ModelConfig& c, nlohmann::json& j);
  // The window of layer l (0: full attention).
  int64_t (*layer_window)(const ModelConfig& c, int64_t layer);
};

// The family of a model_type; fails naming the supported ones.
const Architecture& architecture(std::string_view model_type, std::string_view source = "config.json");
std::vector<std::string_view> architecture_names();

// The pieces families share (architecture.cpp).
namespace arch {
void read_no_window(const JsonFields& f, ModelConfig& c);
void read_sliding_window(const JsonFields& f, ModelConfig& c);   // sliding_window on every layer
void read_qwen_window(const JsonFields& f, ModelConfig& c);      // use_sliding_window, max_window_layers
void write_sliding_window(const ModelConfig& c, nlohmann::json& j);
void write_qwen_window(const ModelConfig& c, nlohmann::json& j);
int64_t every_layer_window(const ModelConfig& c, int64_t layer);
int64_t qwen_layer_window(const ModelConfig& c, int64_t layer);  // layers below max_window_layers stay full
// Gemma: the layers config.json's layer_types names sliding_attention (else
// every `pattern`th layer full when pattern > 0, and the others sliding).
void read_layer_types(const JsonFields& f, ModelConfig& c, int64_t pattern);
void write_layer_types(const ModelConfig& c, nlohmann::json& j);
int64_t listed_layer_window(const ModelConfig& c, int64_t layer);
// Gemma's options: (1 + weight) norms, post-norms, scaled embeddings, GeGLU,
// and the fields both Gemma families read alike.
void set_gemma_options(ModelConfig& c, bool attention_bias);
void read_gemma_fields(const JsonFields& f, ModelConfig& c, double attn_softcap, double final_softcap);
void write_gemma_fields(const ModelConfig& c, nlohmann::json& j);
}  // namespace arch

}  // namespace slm
