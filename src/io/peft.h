// PEFT LoRA adapter folders, as Python `peft` writes and reads them:
// adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
// lora_dropout, target_modules, bias "none", fan_in_fan_out false,
// base_model_name_or_path) and adapter_model.safetensors with tensors named
// base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight ([r, in])
// and ...lora_B.weight ([out, r]).
#pragma once

#include <slm/tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace slm {

struct PeftLoraConfig {
  int64_t r = 8;
  double lora_alpha = 16.0;
  double lora_dropout = 0.0;
  std::vector<std::string> target_modules;  // module names, or {"all-linear"}
  std::string base_model_name_or_path;

  std::string to_json() const;
  // Validates what slm can apply: peft_type LORA, bias "none", fan_in_fan_out
  // false, no DoRA or rsLoRA. `source` names the file in messages.
  static PeftLoraConfig from_json(const std::string& text, const std::string& source);
};

struct PeftAdapter {
  PeftLoraConfig config;
  std::map<std::string, Tensor> tensors;  // by PEFT name, viewing the mapped file
};

// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (DIR is
// created when missing), each through a temporary file and a rename.
void save_peft_adapter(const std::filesystem::path& dir, const PeftLoraConfig& config,
                       const std::vector<std::pair<std::string, Tensor>>& tensors);
PeftAdapter load_peft_adapter(const std::filesystem::path& dir);

}  // namespace slm
