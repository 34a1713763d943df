// LoRA adapters merged into a model (W' = W + scale · B·A), and a model
// written out as a Hugging Face folder.
#include <slm/error.h>
#include <slm/train.h>

#include "backend/backend.h"
#include "core/atomic_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/modules.h"
#include "model/weight_layout.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace slm {

namespace {

Tensor merged(const Backend& backend, const Tensor& W, const LoraWeights& u, DType dtype) {
  const int64_t out = W.dim(0), in = W.dim(1), rank = u.A.dim(0);
  Tensor result = Tensor::zeros(DType::F32, W.shape());
  const Tensor wide = W.to(DType::F32);
  std::memcpy(result.data(), wide.data(), result.nbytes());
  backend.sgemm(false, false, out, in, rank, u.scale, u.B.data_as<const float>(), rank, u.A.data_as<const float>(), in,
                1.0f, result.data_as<float>(), in);
  return dtype == DType::F32 ? result : result.to(dtype);
}

}  // namespace

Model merge_adapter(const Model& base, const std::filesystem::path& adapter_dir, std::optional<DType> dtype) {
  const Adapter adapter = load_adapter(base, adapter_dir);
  Weights weights = base.weights();
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    for (int m = 0; m < kLoraModuleCount; ++m) {
      const LoraWeights& u = adapter.at(static_cast<int64_t>(l), static_cast<LoraModule>(m));
      if (u.empty()) continue;
      for (const auto& [part, w] : lora_parts(base.config(), static_cast<LoraModule>(m), u)) {
        Tensor& W = module_of(weights.layers[l], part);
        W = merged(base.backend(), W, w, dtype.value_or(W.dtype()));
      }
    }
  }
  return Model(base.config(), std::move(weights));
}

void save_model_folder(const Model& model, const std::filesystem::path& out, DType dtype,
                       const std::filesystem::path& files_from) {
  if (is_quantized(dtype)) fail("--dtype ", dtype_name(dtype), ": a model folder holds f32, f16 or bf16 weights");
  const ModelConfig& c = model.config();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : named_weights(model.weights(), c)) tensors.emplace_back(name, t->to(dtype));
  tensors = checkpoint_tensors(std::move(tensors), c);

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
