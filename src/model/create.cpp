// Randomly initialised models in Hugging Face layout: the fixtures of tests
// and benchmarks, and the starting point of training from scratch.
#include <slm/error.h>
#include <slm/model.h>
#include <slm/random.h>

#include "core/atomic_file.h"
#include "core/half.h"
#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>

namespace slm {

namespace {

struct NamedShape {
  const char* name;
  ModelConfig (*make)();
};

ModelConfig base(const char* type, int64_t hidden, int64_t layers, int64_t heads, int64_t kv_heads, int64_t inter,
                 int64_t vocab) {
  ModelConfig c;
  c.model_type = type;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  c.head_dim = hidden / heads;
  c.set_family_options(false);
  return c;
}

const NamedShape kShapes[] = {
    {"tiny",
     [] {
       ModelConfig c = base("llama", 64, 2, 4, 2, 160, 512);
       c.max_position_embeddings = 2048;
       return c;
     }},
    {"smollm2-135m",
     [] {
       ModelConfig c = base("llama", 576, 30, 9, 3, 1536, 49152);
       c.tie_word_embeddings = true;
       c.rope_theta = 100000;
       c.rms_norm_eps = 1e-5;
       c.max_position_embeddings = 8192;
       c.bos_token_ids = {0};
       c.eos_token_ids = {0};
       return c;
     }},
    {"qwen2.5-0.5b",
     [] {
       ModelConfig c = base("qwen2", 896, 24, 14, 2, 4864, 151936);
       c.tie_word_embeddings = true;
       c.rope_theta = 1000000;
       c.max_position_embeddings = 32768;
       c.bos_token_ids = {151643};
       c.eos_token_ids = {151643};
       return c;
     }},
    {"llama3.2-1b",
     [] {
       ModelConfig c = base("llama", 2048, 16, 32, 8, 8192, 128256);
       c.tie_word_embeddings = true;
       c.rope_theta = 500000;
       c.rms_norm_eps = 1e-5;
       c.max_position_embeddings = 131072;
       c.rope_scaling = RopeScaling::Llama3;
       c.rope_factor = 32;
       c.rope_low_freq_factor = 1;
       c.rope_high_freq_factor = 4;
       c.rope_original_max_position_embeddings = 8192;
       c.bos_token_ids = {128000};
       c.eos_token_ids = {128001};
       return c;
     }},
};

// Fills `t` with mean + std·N(0,1), in chunks with their own seeds so the
// result does not depend on the number of threads.
void fill_normal(Tensor& t, uint64_t seed, double mean, double std) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = t.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t c = 0; c < chunks; ++c) {
    Rng rng(mix_seed(seed, static_cast<uint64_t>(c)));
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) {
      const auto value = static_cast<float>(mean + std * rng.normal());
      switch (t.dtype()) {
        case DType::F32: t.data_as<float>()[i] = value; break;
        case DType::BF16: t.data_as<uint16_t>()[i] = f32_to_bf16(value); break;
        case DType::F16: t.data_as<uint16_t>()[i] = f32_to_f16(value); break;
        case DType::Q8:
        case DType::Q4: break;  // refused by create_random_model
      }
    }
  }
}

uint64_t name_hash(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : name) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
  return h;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_layout(const ModelConfig& c) {
  const int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {H}});
    out.push_back({p + "self_attn.q_proj.weight", {q, H}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, H}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, H}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {H, q}});
    if (c.output_bias) out.push_back({p + "self_attn.o_proj.bias", {H}});
    out.push_back({p + "post_attention_layernorm.weight", {H}});
    out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, H}});
    out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, H}});
    out.push_back({p + "mlp.down_proj.weight", {H, c.intermediate_size}});
  }
  out.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  return out;
}

std::string shard_name(int64_t index, int64_t count) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "model-%05lld-of-%05lld.safetensors", static_cast<long long>(index + 1),
                static_cast<long long>(count));
  return buffer;
}

}  // namespace

ModelConfig shape_preset(const std::string& name) {
  for (const NamedShape& s : kShapes) {
    if (name == s.name) return s.make();
  }
  std::string names;
  for (const std::string& n : shape_preset_names()) names += (names.empty() ? "" : ", ") + n;
  fail("--shape: unknown shape \"", name, "\" (known: ", names, ")");
}

std::vector<std::string> shape_preset_names() {
  std::vector<std::string> names;
  for (const NamedShape& s : kShapes) names.emplace_back(s.name);
  return names;
}

void create_random_model(const ModelConfig& config, const CreateOptions& options, const std::filesystem::path& out) {
  if (options.shards < 1) fail("--shards must be >= 1, got ", options.shards);
  if (is_quantized(options.dtype)) fail("--dtype: models are written as f32, f16 or bf16 (quantize at load instead)");
  if (!(options.init_std >= 0)) fail("--init-std must be >= 0, got ", options.init_std);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) fail(out.string(), ": cannot create folder: ", ec.message());

  ModelConfig written = config;
  written.torch_dtype = options.dtype;
  written.initializer_range = options.init_std;

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, shape] : tensor_layout(config)) {
    Tensor t = Tensor::zeros(options.dtype, shape);
    const bool is_norm = name.ends_with("norm.weight");
    fill_normal(t, mix_seed(options.seed, name_hash(name)), is_norm ? 1.0 : 0.0, options.init_std);
    tensors.emplace_back(name, std::move(t));
  }

  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  // A folder holds one layout: a leftover file of the other would shadow or confuse it.
  std::filesystem::remove(out / (options.shards == 1 ? "model.safetensors.index.json" : "model.safetensors"), ec);
  if (options.shards == 1) {
    write_safetensors(out / "model.safetensors", tensors, metadata);
  } else {
    const size_t per_shard = (tensors.size() + static_cast<size_t>(options.shards) - 1) / static_cast<size_t>(options.shards);
    nlohmann::json index;
    size_t total_bytes = 0;
    for (int64_t s = 0; s < options.shards; ++s) {
      const size_t begin = std::min(tensors.size(), static_cast<size_t>(s) * per_shard);
      const size_t end = std::min(tensors.size(), begin + per_shard);
      const std::vector<std::pair<std::string, Tensor>> part(tensors.begin() + static_cast<std::ptrdiff_t>(begin),
                                                               tensors.begin() + static_cast<std::ptrdiff_t>(end));
      const std::string file = shard_name(s, options.shards);
      write_safetensors(out / file, part, metadata);
      for (const auto& [name, t] : part) {
        index["weight_map"][name] = file;
        total_bytes += t.nbytes();
      }
    }
    index["metadata"] = {{"total_size", total_bytes}};
    write_text_atomically(out / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  write_text_atomically(out / "config.json", written.to_json());
  nlohmann::json generation = {{"do_sample", false}};
  if (!config.bos_token_ids.empty()) generation["bos_token_id"] = config.bos_token_ids.front();
  if (!config.eos_token_ids.empty()) generation["eos_token_id"] = config.eos_token_ids;
  write_text_atomically(out / "generation_config.json", generation.dump(2) + "\n");
}

}  // namespace slm
