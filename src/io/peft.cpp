#include "io/peft.h"

#include <slm/error.h>

#include "core/atomic_file.h"
#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

namespace slm {

using json = nlohmann::json;

std::string PeftLoraConfig::to_json() const {
  json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["r"] = r;
  j["lora_alpha"] = lora_alpha;
  j["lora_dropout"] = lora_dropout;
  // PEFT takes "all-linear" as a plain string, never inside a list.
  if (target_modules.size() == 1 && target_modules[0] == "all-linear") {
    j["target_modules"] = "all-linear";
  } else {
    j["target_modules"] = target_modules;
  }
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["base_model_name_or_path"] = base_model_name_or_path;
  j["inference_mode"] = true;
  j["use_dora"] = false;
  j["use_rslora"] = false;
  j["modules_to_save"] = nullptr;
  return j.dump(2) + "\n";
}

PeftLoraConfig PeftLoraConfig::from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(source, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(source, ": expected a JSON object");
  auto string_field = [&](const char* name, const char* fallback) -> std::string {
    if (!j.contains(name) || j[name].is_null()) return fallback;
    if (!j[name].is_string()) fail(source, ": field \"", name, "\" must be a string");
    return j[name].get<std::string>();
  };
  auto flag = [&](const char* name) {
    if (!j.contains(name) || j[name].is_null()) return false;
    if (!j[name].is_boolean()) fail(source, ": field \"", name, "\" must be true or false");
    return j[name].get<bool>();
  };
  const std::string type = string_field("peft_type", "");
  if (type != "LORA") fail(source, ": peft_type is \"", type, "\", slm applies only LORA adapters");
  if (const std::string bias = string_field("bias", "none"); bias != "none") {
    fail(source, ": bias is \"", bias, "\", slm supports only \"none\"");
  }
  if (flag("fan_in_fan_out")) fail(source, ": fan_in_fan_out true (Conv1D layers) is not a Llama-family layout");
  if (flag("use_dora")) fail(source, ": use_dora (DoRA) adapters are not supported");
  // PEFT saves whole trained copies of these modules beside the LoRA matrices;
  // applying the adapter without them would be a different model.
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() &&
      !(j["modules_to_save"].is_array() && j["modules_to_save"].empty())) {
    fail(source, ": field \"modules_to_save\" = ", j["modules_to_save"].dump(),
         ": slm applies LoRA matrices only, and these modules' saved copies would be ignored");
  }
  if (flag("use_rslora")) fail(source, ": use_rslora (rank-stabilised scaling) is not supported");
  PeftLoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() <= 0) {
    fail(source, ": field \"r\" must be a positive integer");
  }
  c.r = j["r"].get<int64_t>();
  // The LoRA scale is alpha / r: alpha must be a finite positive number.
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number() || !(j["lora_alpha"].get<double>() > 0) ||
      !std::isfinite(j["lora_alpha"].get<double>())) {
    fail(source, ": field \"lora_alpha\" must be a positive number");
  }
  c.lora_alpha = j["lora_alpha"].get<double>();
  if (j.contains("lora_dropout") && !j["lora_dropout"].is_null()) {
    if (!j["lora_dropout"].is_number() || !(j["lora_dropout"].get<double>() >= 0) ||
        !(j["lora_dropout"].get<double>() < 1)) {
      fail(source, ": field \"lora_dropout\" must be a probability in [0, 1), got ", j["lora_dropout"].dump());
    }
    c.lora_dropout = j["lora_dropout"].get<double>();
  }
  if (!j.contains("target_modules")) fail(source, ": missing field \"target_modules\"");
  const json& targets = j["target_modules"];
  if (targets.is_string()) {
    c.target_modules = {targets.get<std::string>()};
  } else if (targets.is_array()) {
    for (const json& t : targets) {
      if (!t.is_string()) fail(source, ": \"target_modules\" must list module names");
      c.target_modules.push_back(t.get<std::string>());
    }
  } else {
    fail(source, ": \"target_modules\" must be a list of module names or \"all-linear\"");
  }
  if (c.target_modules.empty()) fail(source, ": \"target_modules\" is empty (an adapter on no module)");
  c.base_model_name_or_path = string_field("base_model_name_or_path", "");
  return c;
}

void save_peft_adapter(const std::filesystem::path& dir, const PeftLoraConfig& config,
                       const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(dir.string(), ": cannot create the adapter folder: ", ec.message());
  // The weights first: a folder whose config exists always has complete weights beside it.
  write_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_text_atomically(dir / "adapter_config.json", config.to_json());
}

PeftAdapter load_peft_adapter(const std::filesystem::path& dir) {
  const auto config_path = dir / "adapter_config.json";
  std::ifstream in(config_path);
  if (!in) fail(config_path.string(), ": cannot read (is ", dir.string(), " a PEFT adapter folder?)");
  std::ostringstream text;
  text << in.rdbuf();
  PeftAdapter adapter;
  adapter.config = PeftLoraConfig::from_json(text.str(), config_path.string());
  const auto weights_path = dir / "adapter_model.safetensors";
  if (!std::filesystem::exists(weights_path)) {
    fail(weights_path.string(), ": missing (slm reads adapter weights only in safetensors format)");
  }
  const SafetensorsFile file = SafetensorsFile::open(weights_path);
  for (const auto& [name, entry] : file.entries()) {
    if (name.find(".lora_A.") == std::string::npos && name.find(".lora_B.") == std::string::npos) {
      fail(weights_path.string(), ": tensor \"", name, "\" is not a LoRA A or B matrix");
    }
    adapter.tensors[name] = file.tensor(name);
  }
  return adapter;
}

}  // namespace slm
