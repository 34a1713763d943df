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
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace slm {

std::string lora_module_path(LoraModule module) {
  const bool attention = module <= LoraModule::O || module == LoraModule::QKV;
  return std::string(attention ? "self_attn." : "mlp.") + std::string(kLoraModuleNames[static_cast<size_t>(module)]);
}

std::vector<LoraModule> linear_modules(bool fused_projections) {
  using enum LoraModule;
  if (fused_projections) return {O, Down, QKV, GateUp};
  return {Q, K, V, O, Gate, Up, Down};
}

std::vector<LoraModule> parse_lora_targets(const std::vector<std::string>& names, bool fused_projections,
                                           std::string_view source) {
  if (names.empty()) fail(source, ": no target modules given");
  const std::vector<LoraModule> available = linear_modules(fused_projections);
  std::array<bool, kLoraModuleCount> chosen{};
  for (const std::string& name : names) {
    if (name == "all-linear") {
      for (LoraModule m : available) chosen[static_cast<size_t>(m)] = true;
      continue;
    }
    const auto it = std::find_if(available.begin(), available.end(),
                                 [&](LoraModule m) { return kLoraModuleNames[static_cast<size_t>(m)] == name; });
    if (it == available.end()) {
      std::string valid;
      for (LoraModule m : available) valid += std::string(kLoraModuleNames[static_cast<size_t>(m)]) + ", ";
      fail(source, ": unknown module \"", name, "\" (the model has ", valid, "or all-linear)");
    }
    chosen[static_cast<size_t>(*it)] = true;
  }
  std::vector<LoraModule> modules;
  for (int i = 0; i < kLoraModuleCount; ++i) {
    if (chosen[static_cast<size_t>(i)]) modules.push_back(static_cast<LoraModule>(i));
  }
  return modules;
}

std::pair<int64_t, int64_t> lora_dims(const ModelConfig& c, LoraModule m) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  switch (m) {
    case LoraModule::Q: return {H, q};
    case LoraModule::K:
    case LoraModule::V: return {H, kv};
    case LoraModule::O: return {q, H};
    case LoraModule::Gate:
    case LoraModule::Up: return {H, I};
    case LoraModule::Down: return {I, H};
    case LoraModule::QKV:
    case LoraModule::GateUp: break;
  }
  // A fused module: its parts' rows together.
  int64_t out = 0;
  for (LoraModule part : fused_parts(m)) out += lora_dims(c, part).second;
  return {H, out};
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
std::vector<bool> targeted_modules(const std::vector<std::string>& targets, size_t layers, bool fused,
                                   const std::string& source) {
  std::vector<bool> targeted(layers * kLoraModuleCount, false);
  const std::vector<LoraModule> available = linear_modules(fused);
  const bool pattern = targets.size() == 1 && targets[0] != "all-linear" &&
                       std::none_of(available.begin(), available.end(), [&](LoraModule m) {
                         return kLoraModuleNames[static_cast<size_t>(m)] == targets[0];
                       });
  if (!pattern) {
    for (LoraModule m : parse_lora_targets(targets, fused, source)) {
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
    for (LoraModule m : available) {
      const std::string module = "model.layers." + std::to_string(l) + "." + lora_module_path(m);
      if (std::regex_match(module, expression)) targeted[l * kLoraModuleCount + static_cast<size_t>(m)] = any = true;
    }
  }
  if (!any) {
    fail(source, ": the regular expression \"", targets[0], "\" matches no module (e.g. model.layers.0.",
         lora_module_path(available.front()), ")");
  }
  return targeted;
}

}  // namespace

Adapter load_adapter(const Model& base, const std::filesystem::path& dir, std::string name) {
  const PeftAdapter peft = load_peft_adapter(dir);
  const std::string source = (dir / "adapter_model.safetensors").string();
  const float scale = static_cast<float>(peft.config.lora_alpha / static_cast<double>(peft.config.r));
  const std::vector<LayerWeights>& layers = base.weights().layers;
  const ModelConfig& c = base.config();
  const std::vector<bool> targeted = targeted_modules(peft.config.target_modules, layers.size(), c.fused_projections,
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
      const auto [in, out] = lora_dims(c, m);
      const auto a = peft.tensors.find(prefix + "A.weight");
      const auto b = peft.tensors.find(prefix + "B.weight");
      if (a == peft.tensors.end()) fail(source, ": missing tensor \"", prefix, "A.weight\"");
      if (b == peft.tensors.end()) fail(source, ": missing tensor \"", prefix, "B.weight\"");
      const std::vector<int64_t> want_a{peft.config.r, in}, want_b{out, peft.config.r};
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
