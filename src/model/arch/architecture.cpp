#include "model/arch/architecture.h"

#include <slm/error.h>

namespace slm {

extern const Architecture kLlama, kMistral, kQwen2, kQwen3, kGemma2, kGemma3, kPhi3;

namespace {
const Architecture* const kArchitectures[] = {&kLlama, &kMistral, &kQwen2, &kQwen3, &kGemma2, &kGemma3, &kPhi3};
}  // namespace

const Architecture& architecture(std::string_view model_type, std::string_view source) {
  for (const Architecture* a : kArchitectures) {
    if (a->model_type == model_type) return *a;
  }
  std::string names;
  for (const Architecture* a : kArchitectures) names += (names.empty() ? "" : ", ") + std::string(a->model_type);
  fail(source, ": unknown model_type \"", model_type, "\" (supported: ", names, ")");
}

std::vector<std::string_view> architecture_names() {
  std::vector<std::string_view> names;
  for (const Architecture* a : kArchitectures) names.push_back(a->model_type);
  return names;
}

namespace arch {

void read_no_window(const JsonFields&, ModelConfig&) {}

void read_sliding_window(const JsonFields& f, ModelConfig& c) {
  c.sliding_window = f.integer("sliding_window", 1, 1 << 24, int64_t{0});
}

void read_qwen_window(const JsonFields& f, ModelConfig& c) {
  if (!f.boolean("use_sliding_window", false)) return;
  c.sliding_window = f.integer("sliding_window", 1, 1 << 24, int64_t{0});
  c.max_window_layers = f.integer("max_window_layers", 0, 1024, c.num_hidden_layers);
}

void write_sliding_window(const ModelConfig& c, nlohmann::json& j) {
  j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
}

void write_qwen_window(const ModelConfig& c, nlohmann::json& j) {
  j["use_sliding_window"] = c.sliding_window > 0;
  write_sliding_window(c, j);
  j["max_window_layers"] = c.sliding_window > 0 ? c.max_window_layers : c.num_hidden_layers;
}

int64_t every_layer_window(const ModelConfig& c, int64_t) { return c.sliding_window; }

int64_t qwen_layer_window(const ModelConfig& c, int64_t layer) {
  return c.sliding_window > 0 && layer >= c.max_window_layers ? c.sliding_window : 0;
}

void read_layer_types(const JsonFields& f, ModelConfig& c, int64_t pattern) {
  const auto layers = static_cast<size_t>(c.num_hidden_layers);
  c.sliding_layers.assign(layers, false);
  if (!f.has("layer_types")) {
    for (size_t l = 0; l < layers; ++l) c.sliding_layers[l] = (l + 1) % static_cast<size_t>(pattern) != 0;
    return;
  }
  const nlohmann::json& types = f.raw("layer_types");
  if (!types.is_array() || types.size() != layers) {
    fail(f.file(), ": field \"layer_types\" must list one entry per layer (", layers, "), got ", types.dump());
  }
  for (size_t l = 0; l < layers; ++l) {
    const nlohmann::json& t = types[l];
    if (t == "sliding_attention") {
      c.sliding_layers[l] = true;
    } else if (t != "full_attention") {
      fail(f.file(), ": field \"layer_types\" entry ", l, " is ", t.dump(),
           " (supported: \"sliding_attention\", \"full_attention\")");
    }
  }
}

void write_layer_types(const ModelConfig& c, nlohmann::json& j) {
  nlohmann::json types = nlohmann::json::array();
  for (bool sliding : c.sliding_layers) types.push_back(sliding ? "sliding_attention" : "full_attention");
  j["layer_types"] = types;
}

int64_t listed_layer_window(const ModelConfig& c, int64_t layer) {
  return c.sliding_layers.at(static_cast<size_t>(layer)) ? c.sliding_window : 0;
}

void set_gemma_options(ModelConfig& c, bool attention_bias) {
  c.attention_bias = attention_bias;
  c.output_bias = attention_bias;
  c.norm_unit_offset = true;
  c.post_norms = true;
  c.scale_embeddings = true;
  c.hidden_activation = Activation::GeluTanh;
}

namespace {

// A soft cap: left out, the family's default; null, none.
double read_softcap(const JsonFields& f, const char* key, double fallback) {
  return f.is_null(key) ? 0.0 : f.number(key, 1e-3, 1e6, fallback);
}

}  // namespace

void read_gemma_fields(const JsonFields& f, ModelConfig& c, double attn_softcap, double final_softcap) {
  c.query_pre_attn_scalar = f.number("query_pre_attn_scalar", 1e-6, 1e9, 256.0);
  c.attn_logit_softcapping = read_softcap(f, "attn_logit_softcapping", attn_softcap);
  c.final_logit_softcapping = read_softcap(f, "final_logit_softcapping", final_softcap);
  c.sliding_window = f.integer("sliding_window", 1, 1 << 24, int64_t{4096});
  if (f.boolean("use_bidirectional_attention", false)) {
    fail(f.file(), ": use_bidirectional_attention is not supported (slm's attention is causal)");
  }
}

void write_gemma_fields(const ModelConfig& c, nlohmann::json& j) {
  const auto cap = [](double v) { return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
  j["attention_bias"] = c.attention_bias;
  j["query_pre_attn_scalar"] = c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : 256.0;
  j["attn_logit_softcapping"] = cap(c.attn_logit_softcapping);
  j["final_logit_softcapping"] = cap(c.final_logit_softcapping);
  j["sliding_window"] = c.sliding_window > 0 ? c.sliding_window : 4096;
  if (!c.sliding_layers.empty()) write_layer_types(c, j);
}

}  // namespace arch

}  // namespace slm
