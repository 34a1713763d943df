#include "model/arch/architecture.h"

#include <slm/error.h>

namespace slm {

extern const Architecture kLlama, kMistral, kQwen2, kQwen3;

namespace {
const Architecture* const kArchitectures[] = {&kLlama, &kMistral, &kQwen2, &kQwen3};
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

}  // namespace arch

}  // namespace slm
