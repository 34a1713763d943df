// LoRA adapters: the module names PEFT uses, and PEFT folders read for a base model.
#include <slm/adapter.h>
#include <slm/error.h>
#include <slm/model.h>
#include <slm/random.h>

#include "io/peft.h"
#include "model/modules.h"

#include <algorithm>
#include <atomic>
#include <cmath>
// GCC 12's <regex> trips -Wmaybe-uninitialized inside its own automaton at -O1.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop

namespace slm {

std::string lora_module_path(LoraModule module) {
  const auto index = static_cast<size_t>(module);
  return std::string(index < 4 ? "self_attn." : "mlp.") + std::string(kLoraModuleNames[index]);
}

std::vector<LoraModule> parse_lora_targets(const std::vector<std::string>& names, std::string_view source) {
  if (names.empty()) fail(source, ": no target modules given");
  std::array<bool, kLoraModuleCount> chosen{};
  for (const std::string& name : names) {
    if (name == "all-linear") {
      chosen.fill(true);
      continue;
    }
    const auto it = std::find(kLoraModuleNames.begin(), kLoraModuleNames.end(), name);
    if (it == kLoraModuleNames.end()) {
      std::string valid;
      for (std::string_view n : kLoraModuleNames) valid += std::string(n) + ", ";
      fail(source, ": unknown module \"", name, "\" (the model has ", valid, "or all-linear)");
    }
    chosen[static_cast<size_t>(it - kLoraModuleNames.begin())] = true;
  }
  std::vector<LoraModule> modules;
  for (int i = 0; i < kLoraModuleCount; ++i) {
    if (chosen[static_cast<size_t>(i)]) modules.push_back(static_cast<LoraModule>(i));
  }
  return modules;
}

LoraWeights lora_init(int64_t in, int64_t out, int64_t rank, double alpha, Rng& rng) {
  if (rank <= 0) fail("--lora-r: rank must be positive, got ", rank);
  LoraWeights w{Tensor::zeros(DType::F32, {rank, in}), Tensor::zeros(DType::F32, {out, rank}),
                static_cast<float>(alpha / static_cast<double>(rank))};
  // torch's kaiming_uniform_(a=√5): gain √(2/(1+a²)) = √(1/3), bound = gain·√(3/fan_in) = 1/√fan_in.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  float* a = w.A.data_as<float>();
  for (int64_t i = 0; i < w.A.numel(); ++i) a[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
  return w;
}

uint64_t Adapter::next_id() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

std::vector<LoraModule> Adapter::modules() const {
  std::vector<LoraModule> out;
  for (int i = 0; i < kLoraModuleCount; ++i) {
    const auto m = static_cast<LoraModule>(i);
    const bool used = std::any_of(layers_.begin(), layers_.end(),
                                  [&](const auto& layer) { return !layer[static_cast<size_t>(i)].empty(); });
    if (used) out.push_back(m);
  }
  return out;
}

namespace {

// Which (layer, module) pairs an adapter_config.json's target_modules names,
// flattened layer by layer. A list (or "all-linear") names modules in every
// layer; a single string that is no module name is, as in PEFT, a regular
// expression the module's whole name must match ("model.layers.3.self_attn.q_proj").
std::vector<bool> targeted_modules(const std::vector<std::string>& targets, size_t layers, const std::string& source) {
  std::vector<bool> targeted(layers * kLoraModuleCount, false);
  const bool pattern = targets.size() == 1 && targets[0] != "all-linear" &&
                       std::find(kLoraModuleNames.begin(), kLoraModuleNames.end(), targets[0]) == kLoraModuleNames.end();
  if (!pattern) {
    for (LoraModule m : parse_lora_targets(targets, source)) {
      for (size_t l = 0; l < layers; ++l) targeted[l * kLoraModuleCount + static_cast<size_t>(m)] = true;
    }
    return targeted;
  }
  std::regex expression;
  try {
    expression = std::regex(targets[0]);
  } catch (const std::regex_error& e) {
    fail(source, ": \"", targets[0], "\" is neither a module name nor a regular expression (", e.what(), ")");
  }
  bool any = false;
  for (size_t l = 0; l < layers; ++l) {
    for (int i = 0; i < kLoraModuleCount; ++i) {
      const std::string module = "model.layers." + std::to_string(l) + "." + lora_module_path(static_cast<LoraModule>(i));
      if (std::regex_match(module, expression)) targeted[l * kLoraModuleCount + static_cast<size_t>(i)] = any = true;
    }
  }
  if (!any) fail(source, ": the regular expression \"", targets[0], "\" matches no module (e.g. model.layers.0.self_attn.q_proj)");
  return targeted;
}

}  // namespace

Adapter load_adapter(const Model& base, const std::filesystem::path& dir, std::string name) {
  const PeftAdapter peft = load_peft_adapter(dir);
  const std::string source = (dir / "adapter_model.safetensors").string();
  const float scale = static_cast<float>(peft.config.lora_alpha / static_cast<double>(peft.config.r));
  const std::vector<LayerWeights>& layers = base.weights().layers;
  const std::vector<bool> targeted = targeted_modules(peft.config.target_modules, layers.size(),
                                                      (dir / "adapter_config.json").string() + ": target_modules");
  if (name.empty()) name = std::filesystem::absolute(dir).lexically_normal().filename().string();
  Adapter adapter(static_cast<int64_t>(layers.size()), std::move(name));
  size_t used = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (int i = 0; i < kLoraModuleCount; ++i) {
      if (!targeted[l * kLoraModuleCount + static_cast<size_t>(i)]) continue;
      const auto m = static_cast<LoraModule>(i);
      const std::string prefix =
          "base_model.model.model.layers." + std::to_string(l) + "." + lora_module_path(m) + ".lora_";
      const Tensor& W = module_of(layers[l], m);
      const auto a = peft.tensors.find(prefix + "A.weight");
      const auto b = peft.tensors.find(prefix + "B.weight");
      if (a == peft.tensors.end()) fail(source, ": missing tensor \"", prefix, "A.weight\"");
      if (b == peft.tensors.end()) fail(source, ": missing tensor \"", prefix, "B.weight\"");
      const std::vector<int64_t> want_a{peft.config.r, W.dim(1)}, want_b{W.dim(0), peft.config.r};
      if (a->second.shape() != want_a) {
        fail(source, ": tensor \"", a->first, "\" has shape ", a->second.shape_string(), ", the base model needs ",
             Tensor(DType::F32, want_a, nullptr, nullptr).shape_string());
      }
      if (b->second.shape() != want_b) {
        fail(source, ": tensor \"", b->first, "\" has shape ", b->second.shape_string(), ", the base model needs ",
             Tensor(DType::F32, want_b, nullptr, nullptr).shape_string());
      }
      adapter.at(static_cast<int64_t>(l), m) = LoraWeights{a->second.to(DType::F32), b->second.to(DType::F32), scale};
      used += 2;
    }
  }
  if (used != peft.tensors.size()) {
    fail(source, ": holds ", peft.tensors.size(), " tensors, but the model's ", layers.size(),
         " layers and the target modules account for ", used);
  }
  return adapter;
}

}  // namespace slm
