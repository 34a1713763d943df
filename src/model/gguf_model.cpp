#include "model/gguf_model.h"

#include <slm/error.h>

#include "core/kquant.h"
#include "model/device_map.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <span>
#include <utility>

namespace slm {

namespace {

using json = nlohmann::json;

// Hugging Face names inside a layer and llama.cpp's.
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
// Where a family names a layer's tensors otherwise, looked up first: Gemma's
// four norms (post_attention_layernorm follows attention there), Phi-3's
// fused projections (its ffn_up holds gate and up).
constexpr std::pair<std::string_view, std::string_view> kGemmaLayerNames[] = {
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight"},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"},
};
constexpr std::pair<std::string_view, std::string_view> kPhi3LayerNames[] = {
    {"self_attn.qkv_proj.weight", "attn_qkv.weight"},
    {"mlp.gate_up_proj.weight", "ffn_up.weight"},
};
constexpr std::pair<std::string_view, std::string_view> kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// "12.rest" after `prefix`: the layer and the rest; nullopt otherwise.
std::optional<std::pair<std::string, std::string_view>> split_layer(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  for (size_t i = 0; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
  }
  return std::pair{std::string(name.substr(0, dot)), name.substr(dot + 1)};
}

// `name` from one naming to the other (from_hf: Hugging Face's to llama.cpp's,
// else back), through the family's table and then the common one; nullopt
// for a name neither lists.
std::optional<std::string> translate_name(const ModelConfig& c, std::string_view name, bool from_hf) {
  const auto side = [](const std::pair<std::string_view, std::string_view>& names, bool hf) {
    return hf ? names.first : names.second;
  };
  for (const auto& names : kGlobalNames) {
    if (name == side(names, from_hf)) return std::string(side(names, !from_hf));
  }
  const std::string_view hf_prefix = "model.layers.", gguf_prefix = "blk.";
  const auto layer = split_layer(name, from_hf ? hf_prefix : gguf_prefix);
  if (!layer) return std::nullopt;
  using Names = std::span<const std::pair<std::string_view, std::string_view>>;
  const Names family = c.post_norms ? Names(kGemmaLayerNames) : c.fused_projections ? Names(kPhi3LayerNames) : Names();
  for (const Names table : {family, Names(kLayerNames)}) {
    for (const auto& names : table) {
      if (layer->second == side(names, from_hf)) {
        return std::string(from_hf ? gguf_prefix : hf_prefix) + layer->first + "." + std::string(side(names, !from_hf));
      }
    }
  }
  return std::nullopt;
}

// The query scale llama.cpp's gemma2/gemma3 apply instead of storing one:
// head_dim^-1/2, hidden/heads for the 27B models (46 and 62 layers); as the
// query_pre_attn_scalar whose -1/2 power it is.
int64_t llama_cpp_query_scalar(const std::string& arch, int64_t layers, int64_t hidden, int64_t heads,
                               int64_t head_dim) {
  return layers == (arch == "gemma2" ? 46 : 62) ? hidden / heads : head_dim;
}

// Gemma's norms scale by (1 + weight); llama.cpp's converter stores 1 + weight.
bool offset_norm(const ModelConfig& c, std::string_view hf_name) {
  return c.norm_unit_offset && hf_name.ends_with("norm.weight");
}

// Which of a layer's tensors the llama architecture permutes, with its head count.
std::optional<int64_t> permuted_heads(const ModelConfig& c, std::string_view hf_name) {
  if (!gguf_permutes_qk(c)) return std::nullopt;
  if (hf_name.ends_with("self_attn.q_proj.weight") || hf_name.ends_with("self_attn.q_proj.bias")) {
    return c.num_attention_heads;
  }
  if (hf_name.ends_with("self_attn.k_proj.weight") || hf_name.ends_with("self_attn.k_proj.bias")) {
    return c.num_key_value_heads;
  }
  return std::nullopt;
}

std::optional<DType> native_dtype(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32: return DType::F32;
    case GgmlType::F16: return DType::F16;
    case GgmlType::BF16: return DType::BF16;
    case GgmlType::Q8_0: return DType::Q8;
    case GgmlType::Q4_0: return DType::Q4;
    default: return std::nullopt;
  }
}

// The tensors of a GGUF file under their Hugging Face names.
class GgufWeights : public WeightSource {
 public:
  GgufWeights(const GgufFile& file, const ModelConfig& config, std::optional<DType> dtype)
      : file_(file), config_(config), dtype_(dtype) {}

  bool contains(const std::string& name) const override { return info(name) != nullptr; }

  Tensor tensor(const std::string& name) const override {
    const GgufTensorInfo* t = info(name);
    if (!t) fail(file_.name(), ": missing tensor \"", name, "\"");
    std::vector<int64_t> shape(t->dims.rbegin(), t->dims.rend());
    Tensor result;
    if (const auto dtype = native_dtype(t->type)) {
      result = Tensor(*dtype, std::move(shape), const_cast<uint8_t*>(file_.tensor_data(*t)), file_.mapping());
    } else {
      result = widened(*t, std::move(shape));
    }
    return gguf_tensor_data(config_, name, result, false);
  }

  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const GgufTensorInfo& t : file_.tensors()) {
      // Read into the config.
      if (t.name == "rope_freqs.weight" || t.name.starts_with("rope_factors_")) continue;
      out.push_back(hf_tensor_name(config_, t.name).value_or(t.name));
    }
    return out;
  }

  std::string describe() const override { return file_.name(); }

  void release(const Tensor& view) const override {
    if (file_.mapping()->holds(view.data(), view.nbytes())) file_.mapping()->release(view.data(), view.nbytes());
  }

 private:
  const GgufTensorInfo* info(const std::string& hf_name) const {
    const auto name = gguf_tensor_name(config_, hf_name);
    return name ? file_.find_tensor(*name) : nullptr;
  }

  // K-quants and Q4_1/Q5_0/Q5_1: f32 once, then the dtype asked for (q8 by
  // default: the closest in size that slm multiplies with integer dot products).
  Tensor widened(const GgufTensorInfo& t, std::vector<int64_t> shape) const {
    void (*dequantize)(const void*, int64_t, float*) = nullptr;
    switch (static_cast<GgmlType>(t.type)) {
      case GgmlType::Q4_K: dequantize = dequantize_q4_k; break;
      case GgmlType::Q5_K: dequantize = dequantize_q5_k; break;
      case GgmlType::Q6_K: dequantize = dequantize_q6_k; break;
      case GgmlType::Q4_1: dequantize = dequantize_q4_1; break;
      case GgmlType::Q5_0: dequantize = dequantize_q5_0; break;
      case GgmlType::Q5_1: dequantize = dequantize_q5_1; break;
      default:
        fail(file_.name(), ": tensor \"", t.name, "\" has type ", ggml_type_name(t.type),
             ", which slm does not read (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q4_1, Q5_0, Q5_1)");
    }
    Tensor wide = Tensor::zeros(DType::F32, std::move(shape));
    dequantize(file_.tensor_data(t), wide.numel(), wide.data_as<float>());
    file_.mapping()->release(file_.tensor_data(t), t.bytes);
    return wide.rank() == 1 ? wide : wide.to(dtype_.value_or(DType::Q8));
  }

  const GgufFile& file_;
  const ModelConfig& config_;
  std::optional<DType> dtype_;
};

std::string key(const std::string& arch, const char* name) { return arch + "." + name; }

}  // namespace

std::string gguf_architecture(const ModelConfig& c) {
  if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
  if (c.model_type == "gemma3_text") return "gemma3";
  if (c.model_type == "qwen2" || c.model_type == "qwen3" || c.model_type == "gemma2" || c.model_type == "phi3") {
    return c.model_type;
  }
  fail("GGUF: model_type \"", c.model_type, "\" has no GGUF architecture in slm");
}

bool gguf_permutes_qk(const ModelConfig& c) { return gguf_architecture(c) == "llama"; }

std::optional<std::string> gguf_tensor_name(const ModelConfig& c, std::string_view hf) {
  return translate_name(c, hf, true);
}

std::optional<std::string> hf_tensor_name(const ModelConfig& c, std::string_view gguf) {
  return translate_name(c, gguf, false);
}

Tensor gguf_tensor_data(const ModelConfig& c, std::string_view hf_name, const Tensor& t, bool to_gguf) {
  if (const auto heads = permuted_heads(c, hf_name)) return permute_qk_rows(t, *heads, to_gguf);
  if (offset_norm(c, hf_name)) {
    const float offset = to_gguf ? 1.0f : -1.0f;
    Tensor converted = Tensor::zeros(DType::F32, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) converted.data_as<float>()[i] = t.at(i) + offset;
    return converted;
  }
  return t;
}

Tensor permute_qk_rows(const Tensor& t, int64_t heads, bool to_gguf) {
  const int64_t rows = t.dim(0);
  if (heads <= 0 || rows % (2 * heads) != 0) fail("permute_qk_rows: ", rows, " rows are not ", heads, " heads of pairs");
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(rows);
  const int64_t head_rows = rows / heads, half = head_rows / 2;
  Tensor out = Tensor::zeros(t.dtype(), t.shape());
  const auto* src = static_cast<const uint8_t*>(t.data());
  auto* dst = static_cast<uint8_t*>(out.data());
  // Hugging Face row h·hd + j·half + i is llama.cpp row h·hd + 2i + j.
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t j = 0; j < 2; ++j) {
      for (int64_t i = 0; i < half; ++i) {
        const int64_t hf = h * head_rows + j * half + i, gg = h * head_rows + 2 * i + j;
        const int64_t from = to_gguf ? hf : gg, to = to_gguf ? gg : hf;
        std::memcpy(dst + static_cast<size_t>(to) * row_bytes, src + static_cast<size_t>(from) * row_bytes, row_bytes);
      }
    }
  }
  return out;
}

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  constexpr std::string_view kArchitectures[] = {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"};
  if (std::find(std::begin(kArchitectures), std::end(kArchitectures), arch) == std::end(kArchitectures)) {
    fail(f.name(), ": general.architecture \"", arch,
         "\" is not supported (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)");
  }
  if (const auto type = f.string_or("general.type"); type && *type != "model") {
    fail(f.name(), ": general.type is \"", *type, "\", not a model (a LoRA adapter GGUF is loaded with --adapter)");
  }
  // The metadata as config.json would say it, so one validation serves both.
  json j;
  j["model_type"] = arch == "gemma3" ? "gemma3_text" : arch;
  j["hidden_size"] = f.get_integer(key(arch, "embedding_length"));
  j["intermediate_size"] = f.get_integer(key(arch, "feed_forward_length"));
  j["num_hidden_layers"] = f.get_integer(key(arch, "block_count"));
  const int64_t heads = f.get_integer(key(arch, "attention.head_count"));
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = f.integer_or(key(arch, "attention.head_count_kv")).value_or(heads);
  if (const auto k = f.integer_or(key(arch, "attention.key_length"))) {
    const auto v = f.integer_or(key(arch, "attention.value_length")).value_or(*k);
    if (v != *k) fail(f.name(), ": ", key(arch, "attention.value_length"), " (", v, ") differs from key_length (", *k, ")");
    j["head_dim"] = *k;
  }
  const int64_t head_dim = j.contains("head_dim") ? j["head_dim"].get<int64_t>() : j["hidden_size"].get<int64_t>() / heads;
  if (const auto rot = f.integer_or(key(arch, "rope.dimension_count")); rot && *rot != head_dim) {
    fail(f.name(), ": ", key(arch, "rope.dimension_count"), " = ", *rot, " rotates part of each head (slm rotates all ",
         head_dim, ")");
  }
  const GgufTensorInfo* embedding = f.find_tensor("token_embd.weight");
  if (!embedding || embedding->dims.size() != 2) fail(f.name(), ": missing 2-D tensor \"token_embd.weight\"");
  j["vocab_size"] = f.integer_or(key(arch, "vocab_size")).value_or(static_cast<int64_t>(embedding->dims[1]));
  j["max_position_embeddings"] = f.get_integer(key(arch, "context_length"));
  j["rms_norm_eps"] = f.get_float(key(arch, "attention.layer_norm_rms_epsilon"));
  if (const auto base = f.float_or(key(arch, "rope.freq_base"))) j["rope_theta"] = *base;
  const std::string scaling = f.string_or(key(arch, "rope.scaling.type")).value_or("none");
  if (scaling == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", f.get_float(key(arch, "rope.scaling.factor"))}};
  } else if (scaling != "none") {
    fail(f.name(), ": ", key(arch, "rope.scaling.type"), " \"", scaling, "\" is not supported (supported: none, linear)");
  }
  j["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  j["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  const auto window = f.integer_or(key(arch, "attention.sliding_window"));
  if (arch == "gemma2" || arch == "gemma3") {
    // llama.cpp fixes the query scale, keeps Gemma 3's local base at 10000
    // and its layers in sixes.
    j["query_pre_attn_scalar"] = llama_cpp_query_scalar(arch, j["num_hidden_layers"].get<int64_t>(),
                                                        j["hidden_size"].get<int64_t>(), heads, head_dim);
    if (window) j["sliding_window"] = *window;
    if (arch == "gemma2") {
      j["attn_logit_softcapping"] = f.float_or(key(arch, "attn_logit_softcapping")).value_or(50.0);
      j["final_logit_softcapping"] = f.float_or(key(arch, "final_logit_softcapping")).value_or(30.0);
    } else {
      j["rope_local_base_freq"] = 10000.0;
    }
  }
  if (arch == "phi3") {
    j["sliding_window"] = window && *window > 0 ? json(*window) : json(nullptr);
    if (const auto original = f.integer_or(key(arch, "rope.scaling.original_context_length"))) {
      j["original_max_position_embeddings"] = *original;
    }
    const GgufTensorInfo* long_factors = f.find_tensor("rope_factors_long.weight");
    const GgufTensorInfo* short_factors = f.find_tensor("rope_factors_short.weight");
    if (long_factors || short_factors) {
      const auto factors = [&](const GgufTensorInfo* t, const char* name) {
        if (!t || t->type != static_cast<uint32_t>(GgmlType::F32) || t->dims.size() != 1 ||
            t->dims[0] != static_cast<uint64_t>(head_dim / 2)) {
          fail(f.name(), ": tensor \"", name, "\" must be F32 [", head_dim / 2, "] (longrope's factors)");
        }
        const auto* data = reinterpret_cast<const float*>(f.tensor_data(*t));
        return std::vector<float>(data, data + head_dim / 2);
      };
      j["rope_scaling"] = {{"type", "longrope"},
                           {"short_factor", factors(short_factors, "rope_factors_short.weight")},
                           {"long_factor", factors(long_factors, "rope_factors_long.weight")}};
      if (const auto attn = f.float_or(key(arch, "rope.scaling.attn_factor"))) j["rope_scaling"]["attention_factor"] = *attn;
    }
  }
  if (const auto bos = f.integer_or("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = *bos;
  if (const auto eos = f.integer_or("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = *eos;
  ModelConfig c = ModelConfig::from_json(j.dump(), f.name() + " (metadata)");
  if (const GgufTensorInfo* freqs = f.find_tensor("rope_freqs.weight")) {
    // Llama 3's rope scaling, as llama.cpp stores it: a divisor per frequency.
    if (freqs->type != static_cast<uint32_t>(GgmlType::F32) || freqs->dims.size() != 1 ||
        freqs->dims[0] != static_cast<uint64_t>(c.head_dim / 2)) {
      fail(f.name(), ": tensor \"rope_freqs.weight\" must be F32 [", c.head_dim / 2, "]");
    }
    c.rope_freq_factors.resize(static_cast<size_t>(c.head_dim / 2));
    std::memcpy(c.rope_freq_factors.data(), f.tensor_data(*freqs), c.rope_freq_factors.size() * sizeof(float));
  }
  return c;
}

ModelConfig ModelConfig::from_model_path(const std::filesystem::path& model) {
  if (is_gguf_file(model)) return gguf_model_config(GgufFile::open(model));
  return from_file(model / "config.json");
}

Model load_gguf_model(const std::filesystem::path& path, const LoadOptions& options) {
  const GgufFile file = GgufFile::open(path);
  ModelConfig config = gguf_model_config(file);
  check_placement(options, config.num_hidden_layers);
  const GgufWeights source(file, config, options.dtype);
  Weights weights = read_weights(config, source, options.dtype);
  return Model(std::move(config), std::move(weights));
}

void write_gguf_model_metadata(const ModelConfig& c, std::string_view name, uint32_t file_type, GgufWriter& w) {
  const std::string arch = gguf_architecture(c);
  w.set("general.architecture", GgufValue::of_string(arch));
  w.set("general.type", GgufValue::of_string("model"));
  w.set("general.name", GgufValue::of_string(std::string(name)));
  auto u32 = [&](const char* k, int64_t v) { w.set(key(arch, k), GgufValue::of_u32(static_cast<uint32_t>(v))); };
  u32("vocab_size", c.vocab_size);
  u32("context_length", c.max_position_embeddings);
  u32("embedding_length", c.hidden_size);
  u32("block_count", c.num_hidden_layers);
  u32("feed_forward_length", c.intermediate_size);
  u32("attention.head_count", c.num_attention_heads);
  u32("attention.head_count_kv", c.num_key_value_heads);
  u32("rope.dimension_count", c.head_dim);
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    u32("attention.key_length", c.head_dim);
    u32("attention.value_length", c.head_dim);
  }
  w.set(key(arch, "rope.freq_base"), GgufValue::of_f32(static_cast<float>(c.rope_theta)));
  w.set(key(arch, "attention.layer_norm_rms_epsilon"), GgufValue::of_f32(static_cast<float>(c.rms_norm_eps)));
  if (c.rope_scaling == RopeScaling::Linear) {
    w.set(key(arch, "rope.scaling.type"), GgufValue::of_string("linear"));
    w.set(key(arch, "rope.scaling.factor"), GgufValue::of_f32(static_cast<float>(c.rope_factor)));
  }
  const auto f32 = [&](const char* k, double v) { w.set(key(arch, k), GgufValue::of_f32(static_cast<float>(v))); };
  if (arch == "gemma2" || arch == "gemma3") {
    const auto scalar = static_cast<double>(
        llama_cpp_query_scalar(arch, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.head_dim));
    if (c.query_pre_attn_scalar != scalar) {
      fail("GGUF: query_pre_attn_scalar ", c.query_pre_attn_scalar, " is not what llama.cpp's ", arch,
           " computes (", scalar, ")");
    }
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const bool sliding = arch == "gemma2" ? l % 2 == 0 : (l + 1) % 6 != 0;
      if ((c.layer_window(l) > 0) != sliding) {
        fail("GGUF: layer ", l, (sliding ? " has full attention" : " slides its window"), ", where llama.cpp's ", arch,
             (sliding ? " slides it" : " attends fully"), " (", arch == "gemma2" ? "even layers slide" : "every sixth layer is full",
             ")");
      }
    }
    u32("attention.key_length", c.head_dim);
    u32("attention.value_length", c.head_dim);
    u32("attention.sliding_window", c.sliding_window);
    if (arch == "gemma2") {
      if (!c.tie_word_embeddings) fail("GGUF: llama.cpp's gemma2 ties its output to the embedding; this model does not");
      f32("attn_logit_softcapping", c.attn_logit_softcapping);
      f32("final_logit_softcapping", c.final_logit_softcapping);
      if (c.attn_logit_softcapping <= 0 || c.final_logit_softcapping <= 0) {
        fail("GGUF: llama.cpp's gemma2 soft-caps attention and logits (both caps must be set)");
      }
    } else if (c.attn_logit_softcapping > 0 || c.final_logit_softcapping > 0 ||
               (c.rope_local_theta > 0 && c.rope_local_theta != 10000.0)) {
      fail("GGUF: llama.cpp's gemma3 has no soft caps and rotates its sliding layers with base 10000");
    }
  }
  if (arch == "phi3") {
    if (c.head_dim * c.num_attention_heads != c.hidden_size) {
      fail("GGUF: llama.cpp's phi3 needs head_dim × heads = hidden_size (", c.head_dim, " × ", c.num_attention_heads,
           " != ", c.hidden_size, ")");
    }
    u32("rope.scaling.original_context_length",
        c.rope_original_max_position_embeddings > 0 ? c.rope_original_max_position_embeddings : c.max_position_embeddings);
    u32("attention.sliding_window", c.sliding_window);
    if (c.rope_scaling == RopeScaling::LongRope) f32("rope.scaling.attn_factor", c.rope_attention_factor);
  }
  w.set("general.file_type", GgufValue::of_u32(file_type));
  w.set("general.quantization_version", GgufValue::of_u32(2));
}

}  // namespace slm
