// config.json and generation_config.json, read with every field a decoder
// needs checked; what differs between families comes from their
// Architecture (model/arch/).
#include <slm/error.h>
#include <slm/model.h>

#include "core/half.h"
#include "io/json_fields.h"
#include "model/arch/architecture.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <iterator>

namespace slm {

namespace {

using json = nlohmann::json;

constexpr int64_t kMaxDim = 1 << 17;
constexpr int64_t kMaxVocab = 1 << 22;

const char* activation_name(Activation a) { return a == Activation::SiLU ? "silu" : "gelu_pytorch_tanh"; }

Activation parse_activation(const JsonFields& f, const char* key, Activation fallback) {
  const std::string name = f.string(key, activation_name(fallback));
  if (name == "silu") return Activation::SiLU;
  if (name == "gelu_pytorch_tanh") return Activation::GeluTanh;
  fail(f.file(), ": ", key, " \"", name, "\" is not supported (expected silu or gelu_pytorch_tanh)");
}

// A longrope factor list: one positive divisor per rotary frequency.
std::vector<float> read_rope_factors(const JsonFields& rs, const char* key, int64_t count) {
  if (!rs.has(key)) fail(rs.file(), ": missing field \"", key, "\" (longrope needs ", count, " factors)");
  const json& v = rs.raw(key);
  if (!v.is_array() || static_cast<int64_t>(v.size()) != count) {
    fail(rs.file(), ": field \"", key, "\" must list ", count, " numbers (head_dim / 2), got ", v.dump().substr(0, 80));
  }
  std::vector<float> out;
  for (const json& x : v) {
    if (!x.is_number() || !(x.get<double>() > 0 && x.get<double>() < 1e6)) {
      fail(rs.file(), ": field \"", key, "\" holds ", x.dump(), " (expected positive numbers)");
    }
    out.push_back(static_cast<float>(x.get<double>()));
  }
  return out;
}

}  // namespace

double longrope_attention_factor(double factor, int64_t original_max_position) {
  if (factor <= 1.0) return 1.0;
  return std::sqrt(1.0 + std::log(factor) / std::log(static_cast<double>(original_max_position)));
}

ModelConfig ModelConfig::from_file(const std::filesystem::path& config_json) {
  std::ifstream in(config_json);
  if (!in) fail(config_json.string(), ": cannot open (expected a Hugging Face config.json)");
  const std::string text(std::istreambuf_iterator<char>(in), {});
  return from_json(text, config_json.string());
}

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
  const JsonFields f(root, source);
  ModelConfig c;
  c.model_type = f.string("model_type");
  const Architecture& arch = architecture(c.model_type, f.file());

  c.hidden_size = f.integer("hidden_size", 1, kMaxDim);
  c.intermediate_size = f.integer("intermediate_size", 1, 4 * kMaxDim);
  c.num_hidden_layers = f.integer("num_hidden_layers", 1, 1024);
  c.num_attention_heads = f.integer("num_attention_heads", 1, 1024);
  c.num_key_value_heads = f.integer("num_key_value_heads", 1, 1024, c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    fail(f.file(), ": num_attention_heads (", c.num_attention_heads, ") must be a multiple of num_key_value_heads (",
         c.num_key_value_heads, ")");
  }
  if (f.has("head_dim")) {
    c.head_dim = f.integer("head_dim", 2, 1024);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      fail(f.file(), ": hidden_size (", c.hidden_size, ") must be a multiple of num_attention_heads (",
           c.num_attention_heads, ") when head_dim is not given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
    // The bounds an explicit head_dim has, so what to_json() writes reads back.
    if (c.head_dim < 2 || c.head_dim > 1024) {
      fail(f.file(), ": hidden_size / num_attention_heads = ", c.head_dim,
           " is not a usable head dimension (expected 2 to 1024; give head_dim explicitly)");
    }
  }
  if (c.head_dim % 2 != 0) fail(f.file(), ": head_dim (", c.head_dim, ") must be even for rotary embeddings");
  c.vocab_size = f.integer("vocab_size", 1, kMaxVocab);
  c.max_position_embeddings = f.integer("max_position_embeddings", 1, 1 << 24, 2048);
  c.rms_norm_eps = f.number("rms_norm_eps", 0.0, 1.0, 1e-6);
  c.rope_theta = f.number("rope_theta", 1.0, 1e12, 10000.0);
  c.initializer_range = f.number("initializer_range", 0.0, 10.0, 0.02);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", arch.tied_by_default);
  arch.set_options(c, f.boolean("attention_bias", false));
  c.hidden_activation = parse_activation(f, arch.activation_field, c.hidden_activation);

  if (f.has("rope_scaling")) {
    const JsonFields rs(f.raw("rope_scaling"), f.file() + ": rope_scaling");
    const std::string type = rs.has("rope_type") ? rs.string("rope_type") : rs.string("type", "default");
    if (type == "linear") {
      c.rope_scaling = RopeScaling::Linear;
      c.rope_factor = rs.number("factor", 1e-3, 1e6, 1.0);
    } else if (type == "llama3") {
      c.rope_scaling = RopeScaling::Llama3;
      c.rope_factor = rs.number("factor", 1e-3, 1e6, 8.0);
      c.rope_low_freq_factor = rs.number("low_freq_factor", 1e-6, 1e6, 1.0);
      c.rope_high_freq_factor = rs.number("high_freq_factor", 1e-6, 1e6, 4.0);
      if (c.rope_high_freq_factor <= c.rope_low_freq_factor) {
        fail(rs.file(), ": high_freq_factor must be greater than low_freq_factor");
      }
      c.rope_original_max_position_embeddings =
          rs.integer("original_max_position_embeddings", 1, 1 << 24, int64_t{8192});
    } else if (type == "longrope") {
      c.rope_scaling = RopeScaling::LongRope;
      c.rope_short_factor = read_rope_factors(rs, "short_factor", c.head_dim / 2);
      c.rope_long_factor = read_rope_factors(rs, "long_factor", c.head_dim / 2);
      // As transformers: a top-level original_max_position_embeddings (Phi-3's)
      // makes the factor max_position_embeddings / original, else rope_scaling's.
      if (f.has("original_max_position_embeddings")) {
        c.rope_original_max_position_embeddings =
            f.integer("original_max_position_embeddings", 1, c.max_position_embeddings);
        c.rope_factor = static_cast<double>(c.max_position_embeddings) /
                        static_cast<double>(c.rope_original_max_position_embeddings);
      } else {
        c.rope_original_max_position_embeddings = c.max_position_embeddings;
        c.rope_factor = rs.number("factor", 1e-3, 1e6, 1.0);
      }
      c.rope_attention_factor =
          rs.has("attention_factor")
              ? rs.number("attention_factor", 1e-6, 1e6, 1.0)
              : longrope_attention_factor(c.rope_factor, c.rope_original_max_position_embeddings);
    } else if (type != "default") {
      fail(f.file(), ": unsupported rope_scaling type \"", type, "\" (supported: linear, llama3, longrope)");
    }
  }

  arch.read_fields(f, c);

  c.bos_token_ids = f.ids("bos_token_id");
  c.eos_token_ids = f.ids("eos_token_id");
  for (const auto& [key, ids] : {std::pair{"bos_token_id", &c.bos_token_ids}, std::pair{"eos_token_id", &c.eos_token_ids}}) {
    for (int32_t id : *ids) {
      if (id >= c.vocab_size) {
        fail(f.file(), ": field \"", key, "\" = ", id, " is outside the vocabulary (vocab_size ", c.vocab_size, ")");
      }
    }
  }
  const std::string dtype_key = f.has("torch_dtype") ? "torch_dtype" : "dtype";
  if (f.has(dtype_key.c_str())) {
    // Only the dtypes a checkpoint can hold: slm's own q8/q4 exist in memory only.
    const auto dtype = parse_dtype(f.string(dtype_key.c_str()));
    if (dtype && !is_quantized(*dtype)) c.torch_dtype = *dtype;
  }
  return c;
}

void ModelConfig::set_family_options(bool bias) { architecture(model_type, "model_type").set_options(*this, bias); }

int64_t ModelConfig::layer_window(int64_t layer) const {
  return sliding_window == 0 ? 0 : architecture(model_type).layer_window(*this, layer);
}

int64_t ModelConfig::parameter_count() const {
  const int64_t q = num_attention_heads * head_dim;
  const int64_t kv = num_key_value_heads * head_dim;
  int64_t per_layer = hidden_size * (q + 2 * kv) + q * hidden_size + 3 * hidden_size * intermediate_size +
                      2 * hidden_size;
  if (attention_bias) per_layer += q + 2 * kv;
  if (output_bias) per_layer += hidden_size;
  if (qk_norm) per_layer += 2 * head_dim;
  if (post_norms) per_layer += 2 * hidden_size;
  int64_t total = vocab_size * hidden_size + num_hidden_layers * per_layer + hidden_size;
  if (!tie_word_embeddings) total += vocab_size * hidden_size;
  return total;
}

float ModelConfig::attention_scale() const {
  return static_cast<float>(1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar
                                                                       : static_cast<double>(head_dim)));
}

float ModelConfig::embedding_scale() const {
  if (!scale_embeddings) return 1.0f;
  // transformers multiplies by sqrt(hidden_size) cast to the weights' dtype
  // (sqrt(3072) = 55.4256 becomes 55.5 in bf16): the checkpoint's dtype.
  const auto scale = static_cast<float>(std::sqrt(static_cast<double>(hidden_size)));
  switch (torch_dtype) {
    case DType::BF16: return bf16_to_f32(f32_to_bf16(scale));
    case DType::F16: return f16_to_f32(f32_to_f16(scale));
    default: return scale;
  }
}

std::string ModelConfig::to_json() const {
  const Architecture& arch = architecture(model_type);
  json j;
  j["architectures"] = {arch.hf_class};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j[arch.activation_field] = activation_name(hidden_activation);
  j["initializer_range"] = initializer_range;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_dropout"] = 0.0;
  if (rope_scaling == RopeScaling::Linear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_factor}};
  } else if (rope_scaling == RopeScaling::Llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rope_factor},
                         {"low_freq_factor", rope_low_freq_factor},
                         {"high_freq_factor", rope_high_freq_factor},
                         {"original_max_position_embeddings", rope_original_max_position_embeddings}};
  } else if (rope_scaling == RopeScaling::LongRope) {
    // Phi-3's form: the factor follows from the two context lengths, so
    // only an attention factor other than the one it implies is written.
    j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", rope_short_factor}, {"long_factor", rope_long_factor}};
    j["original_max_position_embeddings"] = rope_original_max_position_embeddings;
    const double implied = longrope_attention_factor(
        static_cast<double>(max_position_embeddings) / static_cast<double>(rope_original_max_position_embeddings),
        rope_original_max_position_embeddings);
    if (std::abs(rope_attention_factor - implied) > 1e-9 * implied) j["rope_scaling"]["attention_factor"] = rope_attention_factor;
  } else {
    j["rope_scaling"] = nullptr;
  }
  arch.write_fields(*this, j);
  auto ids = [](const std::vector<int32_t>& v) -> json {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v[0];
    return v;
  };
  j["bos_token_id"] = ids(bos_token_ids);
  j["eos_token_id"] = ids(eos_token_ids);
  const char* dtype_names[] = {"float32", "float16", "bfloat16"};
  j["torch_dtype"] = is_quantized(torch_dtype) ? "float32" : dtype_names[static_cast<int>(torch_dtype)];
  j["use_cache"] = true;
  return j.dump(2) + "\n";
}

GenerationDefaults GenerationDefaults::from_file(const std::filesystem::path& generation_config_json) {
  const json root = read_json(generation_config_json);
  const JsonFields f(root, generation_config_json.string());
  GenerationDefaults g;
  g.eos_token_ids = f.ids("eos_token_id");
  if (f.has("do_sample")) g.do_sample = f.boolean("do_sample", false);
  if (f.has("temperature")) g.temperature = f.number("temperature", 0.0, 1e6, 1.0);
  if (f.has("top_p")) g.top_p = f.number("top_p", 0.0, 1.0, 1.0);
  if (f.has("min_p")) g.min_p = f.number("min_p", 0.0, 1.0, 0.0);
  if (f.has("repetition_penalty")) g.repetition_penalty = f.number("repetition_penalty", 1e-6, 1e6, 1.0);
  if (f.has("top_k")) g.top_k = f.integer("top_k", 0, kMaxVocab);
  return g;
}

}  // namespace slm
