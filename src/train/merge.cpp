// LoRA adapters applied to a model, merged (W' = W + scale · B·A) or at run
// time, and a model written out as a Hugging Face folder.
#include <slm/error.h>
#include <slm/train.h>

#include "core/atomic_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "train/lora.h"

#include <cblas.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace slm {

namespace {

Tensor merged(const Tensor& W, const LowRankUpdate& u, DType dtype) {
  const int64_t out = W.dim(0), in = W.dim(1), rank = u.A.dim(0);
  Tensor result = Tensor::zeros(DType::F32, W.shape());
  const Tensor wide = W.to(DType::F32);
  std::memcpy(result.data(), wide.data(), result.nbytes());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out), static_cast<int>(in),
              static_cast<int>(rank), u.scale, u.B.data_as<const float>(), static_cast<int>(rank),
              u.A.data_as<const float>(), static_cast<int>(in), 1.0f, result.data_as<float>(), static_cast<int>(in));
  return dtype == DType::F32 ? result : result.to(dtype);
}

// The PEFT adapter in `adapter_dir` as f32 low-rank updates per layer, every
// tensor checked against `model`'s weights.
std::vector<LayerAdapter> read_adapter(const Model& model, const std::filesystem::path& adapter_dir) {
  const PeftAdapter adapter = load_peft_adapter(adapter_dir);
  const std::string source = (adapter_dir / "adapter_model.safetensors").string();
  const float scale = static_cast<float>(adapter.config.lora_alpha / static_cast<double>(adapter.config.r));
  const std::vector<train::LoraModule> modules = train::parse_lora_targets(adapter.config.target_modules);
  const std::vector<LayerWeights>& layers = model.weights().layers;
  std::vector<LayerAdapter> updates(layers.size());
  size_t used = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (train::LoraModule m : modules) {
      const std::string prefix =
          "base_model.model.model.layers." + std::to_string(l) + "." + train::lora_module_path(m) + ".lora_";
      const Tensor& W = train::module_of(layers[l], m);
      const auto a = adapter.tensors.find(prefix + "A.weight");
      const auto b = adapter.tensors.find(prefix + "B.weight");
      if (a == adapter.tensors.end()) fail(source, ": missing tensor \"", prefix, "A.weight\"");
      if (b == adapter.tensors.end()) fail(source, ": missing tensor \"", prefix, "B.weight\"");
      const std::vector<int64_t> want_a{adapter.config.r, W.dim(1)}, want_b{W.dim(0), adapter.config.r};
      if (a->second.shape() != want_a) {
        fail(source, ": tensor \"", a->first, "\" has shape ", a->second.shape_string(), ", the base model needs ",
             Tensor(DType::F32, want_a, nullptr, nullptr).shape_string());
      }
      if (b->second.shape() != want_b) {
        fail(source, ": tensor \"", b->first, "\" has shape ", b->second.shape_string(), ", the base model needs ",
             Tensor(DType::F32, want_b, nullptr, nullptr).shape_string());
      }
      train::module_of(updates[l], m) = LowRankUpdate{a->second.to(DType::F32), b->second.to(DType::F32), scale};
      used += 2;
    }
  }
  if (used != adapter.tensors.size()) {
    fail(source, ": holds ", adapter.tensors.size(), " tensors, but the model's ", layers.size(),
         " layers and the target modules account for ", used);
  }
  return updates;
}

}  // namespace

Model merge_adapter(const Model& base, const std::filesystem::path& adapter_dir, std::optional<DType> dtype) {
  const std::vector<LayerAdapter> updates = read_adapter(base, adapter_dir);
  Weights weights = base.weights();
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    for (int m = 0; m < train::kLoraModuleCount; ++m) {
      const LowRankUpdate& u = train::module_of(updates[l], static_cast<train::LoraModule>(m));
      if (u.empty()) continue;
      Tensor& W = train::module_of(weights.layers[l], static_cast<train::LoraModule>(m));
      W = merged(W, u, dtype.value_or(W.dtype()));
    }
  }
  return Model(base.config(), std::move(weights));
}

void attach_adapter(Model& model, const std::filesystem::path& adapter_dir) {
  model.set_adapter(read_adapter(model, adapter_dir));
}

void save_model_folder(const Model& model, const std::filesystem::path& out, DType dtype,
                       const std::filesystem::path& files_from) {
  if (is_quantized(dtype)) fail("--dtype ", dtype_name(dtype), ": a model folder holds f32, f16 or bf16 weights");
  const ModelConfig& c = model.config();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : named_weights(model.weights(), c)) tensors.emplace_back(name, t->to(dtype));

  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) fail(out.string(), ": cannot create folder: ", ec.message());
  // One layout per folder: a leftover shard index would shadow model.safetensors.
  std::filesystem::remove(out / "model.safetensors.index.json", ec);
  write_safetensors(out / "model.safetensors", tensors, {{"format", "pt"}});
  ModelConfig written = c;
  written.torch_dtype = dtype;
  write_text_atomically(out / "config.json", written.to_json());
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json"}) {
    const auto source = files_from / name;
    if (!std::filesystem::exists(source) || std::filesystem::equivalent(files_from, out, ec)) continue;
    std::ifstream in(source, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in) fail(source.string(), ": cannot read");
    write_text_atomically(out / name, text.str());
  }
}

}  // namespace slm
