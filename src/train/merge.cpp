// Merging a LoRA adapter into the base weights: W' = W + scale · B·A.
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

Tensor merged(const Tensor& W, const Tensor& A, const Tensor& B, float scale, DType dtype) {
  const int64_t out = W.dim(0), in = W.dim(1), rank = A.dim(0);
  Tensor result = Tensor::zeros(DType::F32, W.shape());
  const Tensor wide = W.to(DType::F32);
  std::memcpy(result.data(), wide.data(), result.nbytes());
  const Tensor a = A.to(DType::F32), b = B.to(DType::F32);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out), static_cast<int>(in),
              static_cast<int>(rank), scale, b.data_as<const float>(), static_cast<int>(rank), a.data_as<const float>(),
              static_cast<int>(in), 1.0f, result.data_as<float>(), static_cast<int>(in));
  return dtype == DType::F32 ? result : result.to(dtype);
}

}  // namespace

Model merge_adapter(const Model& base, const std::filesystem::path& adapter_dir, std::optional<DType> dtype) {
  const PeftAdapter adapter = load_peft_adapter(adapter_dir);
  const std::string source = (adapter_dir / "adapter_model.safetensors").string();
  const float scale = static_cast<float>(adapter.config.lora_alpha / static_cast<double>(adapter.config.r));
  const std::vector<train::LoraModule> modules = train::parse_lora_targets(adapter.config.target_modules);
  Weights weights = base.weights();
  size_t used = 0;
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    LayerWeights& L = weights.layers[l];
    Tensor* targets[train::kLoraModuleCount] = {&L.q_proj,    &L.k_proj,  &L.v_proj,   &L.o_proj,
                                                &L.gate_proj, &L.up_proj, &L.down_proj};
    for (train::LoraModule m : modules) {
      const std::string prefix =
          "base_model.model.model.layers." + std::to_string(l) + "." + train::lora_module_path(m) + ".lora_";
      Tensor& W = *targets[static_cast<size_t>(m)];
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
      W = merged(W, a->second, b->second, scale, dtype.value_or(W.dtype()));
      used += 2;
    }
  }
  if (used != adapter.tensors.size()) {
    fail(source, ": holds ", adapter.tensors.size(), " tensors, but the model's ", weights.layers.size(),
         " layers and the target modules account for ", used);
  }
  return Model(base.config(), std::move(weights));
}

void save_model_folder(const Model& model, const std::filesystem::path& out, DType dtype,
                       const std::filesystem::path& files_from) {
  if (is_quantized(dtype)) fail("--dtype ", dtype_name(dtype), ": a model folder holds f32, f16 or bf16 weights");
  const ModelConfig& c = model.config();
  const Weights& w = model.weights();
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto add = [&](const std::string& name, const Tensor& t) {
    if (!t.empty()) tensors.emplace_back(name, t.to(dtype));
  };
  add("model.embed_tokens.weight", w.embed_tokens);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", L.attn_norm);
    add(p + "self_attn.q_proj.weight", L.q_proj);
    add(p + "self_attn.k_proj.weight", L.k_proj);
    add(p + "self_attn.v_proj.weight", L.v_proj);
    add(p + "self_attn.o_proj.weight", L.o_proj);
    add(p + "self_attn.q_proj.bias", L.q_bias);
    add(p + "self_attn.k_proj.bias", L.k_bias);
    add(p + "self_attn.v_proj.bias", L.v_bias);
    add(p + "self_attn.o_proj.bias", L.o_bias);
    add(p + "self_attn.q_norm.weight", L.q_norm);
    add(p + "self_attn.k_norm.weight", L.k_norm);
    add(p + "post_attention_layernorm.weight", L.mlp_norm);
    add(p + "mlp.gate_proj.weight", L.gate_proj);
    add(p + "mlp.up_proj.weight", L.up_proj);
    add(p + "mlp.down_proj.weight", L.down_proj);
  }
  add("model.norm.weight", w.final_norm);
  if (!c.tie_word_embeddings) add("lm_head.weight", w.lm_head);

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
