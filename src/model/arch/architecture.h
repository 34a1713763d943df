// What differs between model families, described once per family (one short
// file each in this folder, as mlx-lm has models/llama.py): config.json's
// names for the family, which projections carry biases, q/k norm, which
// layers slide their attention window. Everything the families share (tensor
// names, RMSNorm, SwiGLU, rotary embeddings, LoRA module names) is the
// decoder's.
#pragma once

#include <slm/model.h>

#include "io/json_fields.h"

#include <string_view>
#include <vector>

namespace slm {

struct Architecture {
  std::string_view model_type;  // config.json's model_type
  std::string_view hf_class;    // config.json's architectures entry
  // Sets the bias and q/k-norm options from the family's rules and
  // config.json's attention_bias (for families where it is an option).
  void (*set_options)(ModelConfig& c, bool attention_bias);
  // Reads the family's sliding-window fields.
  void (*read_window)(const JsonFields& f, ModelConfig& c);
  // Writes the family's own fields back (attention_bias, sliding window) as
  // transformers reads them.
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
}  // namespace arch

}  // namespace slm
