// slm export: a model folder (and an adapter merged into it) as a GGUF file
// llama.cpp loads, and an adapter alone as a LoRA GGUF.
#include <slm/error.h>
#include <slm/export.h>
#include <slm/train.h>

#include "io/gguf.h"
#include "model/gguf_model.h"
#include "model/modules.h"
#include "tokenizer/gguf_vocab.h"

#include <cmath>
#include <memory>
#include <numbers>

namespace slm {

namespace {

struct TypeInfo {
  const char* name;
  GgmlType ggml;
  DType dtype;
  uint32_t file_type;  // llama.cpp's LLAMA_FTYPE_ALL_F32, _MOSTLY_F16, ...
};

constexpr TypeInfo kTypes[] = {
    {"f32", GgmlType::F32, DType::F32, 0},     {"f16", GgmlType::F16, DType::F16, 1},
    {"bf16", GgmlType::BF16, DType::BF16, 32}, {"q8_0", GgmlType::Q8_0, DType::Q8, 7},
    {"q4_0", GgmlType::Q4_0, DType::Q4, 2},
};

const TypeInfo& info(GgufWeightType t) { return kTypes[static_cast<size_t>(t)]; }

GgmlType ggml_of(DType d) {
  for (const TypeInfo& t : kTypes) {
    if (t.dtype == d) return t.ggml;
  }
  return GgmlType::F32;
}

// Adds `t` under `name`, dimensions reversed (ggml's fastest-varying first);
// the writer keeps the tensor's memory alive.
void add(GgufWriter& w, const std::string& name, const Tensor& t) {
  std::vector<uint64_t> dims(t.shape().rbegin(), t.shape().rend());
  auto owner = std::make_shared<Tensor>(t);
  w.add_tensor(name, ggml_of(t.dtype()), std::move(dims), t.data(), t.nbytes(), owner);
}

// Llama 3's rope scaling as llama.cpp keeps it: one divisor per frequency.
Tensor llama3_rope_factors(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  Tensor factors = Tensor::zeros(DType::F32, {half});
  const double old_context = static_cast<double>(c.rope_original_max_position_embeddings);
  const double low_wavelen = old_context / c.rope_low_freq_factor, high_wavelen = old_context / c.rope_high_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    const double freq = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    double factor = 1.0;
    if (wavelen > low_wavelen) {
      factor = c.rope_factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (old_context / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
      factor = 1.0 / ((1.0 - smooth) / c.rope_factor + smooth);
    }
    factors.data_as<float>()[i] = static_cast<float>(factor);
  }
  return factors;
}

GgufExportSummary summary_of(const std::filesystem::path& out, int64_t tensors, std::string arch, std::string type,
                             std::string tokenizer) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(out, ec);
  return {tensors, ec ? 0 : static_cast<uint64_t>(bytes), std::move(arch), std::move(type), std::move(tokenizer)};
}

}  // namespace

std::optional<GgufWeightType> parse_gguf_weight_type(const std::string& name) {
  for (size_t i = 0; i < std::size(kTypes); ++i) {
    if (name == kTypes[i].name) return static_cast<GgufWeightType>(i);
  }
  return std::nullopt;
}

GgufExportSummary export_gguf(const std::filesystem::path& model_dir, const std::filesystem::path& out,
                              const GgufExportOptions& options) {
  const Model base = Model::load(model_dir);
  const ModelConfig& c = base.config();
  const GgufWeightType type = options.type.value_or(c.torch_dtype == DType::F16    ? GgufWeightType::F16
                                                    : c.torch_dtype == DType::BF16 ? GgufWeightType::BF16
                                                                                   : GgufWeightType::F32);
  const TypeInfo& t = info(type);
  if (is_quantized(t.dtype) && c.hidden_size % 32 != 0) {
    fail("--type ", t.name, ": rows of ", c.hidden_size, " weights are not whole blocks of 32");
  }
  // Merged in f32, rounded once into the written type.
  const Model model = options.adapter.empty() ? Model(c, base.weights()) : merge_adapter(base, options.adapter, DType::F32);

  GgufWriter w;
  write_gguf_model_metadata(c, model_dir.filename().empty() ? model_dir.parent_path().filename().string()
                                                             : model_dir.filename().string(),
                            t.file_type, w);
  const std::string tokenizer = write_gguf_tokenizer_metadata(model_dir, w, c.vocab_size);
  int64_t count = 0;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, tensor] : named_weights(model.weights(), c)) tensors.emplace_back(name, *tensor);
  for (const auto& [hf_name, tensor] : checkpoint_tensors(std::move(tensors), c)) {
    // Norms and biases (1-D) stay f32, as llama.cpp's converter keeps them.
    const Tensor stored = gguf_tensor_data(c, hf_name, tensor, true);
    add(w, *gguf_tensor_name(c, hf_name), stored.to(stored.rank() == 1 ? DType::F32 : t.dtype));
    ++count;
  }
  if (c.tie_word_embeddings && gguf_architecture(c) == "phi3") {
    // llama.cpp's phi3 always reads an output matrix.
    add(w, "output.weight", model.weights().embed_tokens.to(t.dtype));
    ++count;
  }
  if (c.rope_scaling == RopeScaling::Llama3) {
    add(w, "rope_freqs.weight", llama3_rope_factors(c));
    ++count;
  }
  if (c.rope_scaling == RopeScaling::LongRope) {
    for (const auto& [name, factors] : {std::pair{"rope_factors_long.weight", &c.rope_long_factor},
                                        std::pair{"rope_factors_short.weight", &c.rope_short_factor}}) {
      Tensor stored = Tensor::zeros(DType::F32, {static_cast<int64_t>(factors->size())});
      std::copy(factors->begin(), factors->end(), stored.data_as<float>());
      add(w, name, stored);
      ++count;
    }
  }
  w.write(out);
  return summary_of(out, count, gguf_architecture(c), t.name, tokenizer);
}

GgufExportSummary export_gguf_lora(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                                   const std::filesystem::path& out) {
  const Model base = Model::load(model_dir);
  const ModelConfig& c = base.config();
  const Adapter adapter = load_adapter(base, adapter_dir);
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string(gguf_architecture(c)));
  w.set("general.type", GgufValue::of_string("adapter"));
  w.set("general.name", GgufValue::of_string(adapter_dir.filename().string()));
  w.set("adapter.type", GgufValue::of_string("lora"));
  // llama.cpp scales every pair by one alpha over its own rank.
  std::optional<double> alpha;
  int64_t count = 0;
  for (int64_t l = 0; l < adapter.layers(); ++l) {
    for (int m = 0; m < kLoraModuleCount; ++m) {
      const auto module = static_cast<LoraModule>(m);
      const LoraWeights& u = adapter.at(l, module);
      if (u.empty()) continue;
      const double a = u.scale * static_cast<double>(u.rank());
      if (alpha && std::abs(*alpha - a) > 1e-6 * std::abs(a)) {
        fail(adapter_dir.string(), ": modules have different lora_alpha (", *alpha, " and ", a,
             "); a LoRA GGUF holds one alpha");
      }
      alpha = a;
      const std::string hf = "model.layers." + std::to_string(l) + "." + lora_module_path(module) + ".weight";
      const std::string name = *gguf_tensor_name(c, hf);
      // B's rows are the adapted matrix's: permuted as its rows are.
      add(w, name + ".lora_a", u.A);
      add(w, name + ".lora_b", gguf_tensor_data(c, hf, u.B, true));
      count += 2;
    }
  }
  if (!alpha) fail(adapter_dir.string(), ": the adapter adapts no module");
  w.set("adapter.lora.alpha", GgufValue::of_f32(static_cast<float>(*alpha)));
  w.write(out);
  return summary_of(out, count, gguf_architecture(c), "f32", "none");
}

}  // namespace slm
