// Randomly initialised models in Hugging Face layout: the fixtures of tests
// and benchmarks, and the starting point of training from scratch.
#include <slm/error.h>
#include <slm/model.h>
#include <slm/random.h>

#include "core/atomic_file.h"
#include "core/half.h"
#include "io/safetensors.h"
#include "model/weight_layout.h"

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
                 int64_t vocab, int64_t head_dim = 0) {
  ModelConfig c;
  c.model_type = type;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  c.head_dim = head_dim > 0 ? head_dim : hidden / heads;
  c.set_family_options(false);
  return c;
}

// Gemma 3's text models: layers of 5 sliding (window 512, base 10000) then 1 full (base 10⁶).
ModelConfig gemma3(int64_t hidden, int64_t layers, int64_t inter) {
  ModelConfig c = base("gemma3_text", hidden, layers, 4, 1, inter, 262144, 256);
  c.tie_word_embeddings = true;
  c.rope_theta = 1000000;
  c.rope_local_theta = 10000;
  c.sliding_window = 512;
  for (int64_t l = 0; l < layers; ++l) c.sliding_layers.push_back((l + 1) % 6 != 0);
  c.query_pre_attn_scalar = 256;
  c.max_position_embeddings = 32768;
  c.bos_token_ids = {2};
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
    {"gemma3-270m",
     [] {
       ModelConfig c = gemma3(640, 18, 2048);
       c.eos_token_ids = {1};
       return c;
     }},
    {"gemma3-1b",
     [] {
       ModelConfig c = gemma3(1152, 26, 6912);
       c.eos_token_ids = {1, 106};
       return c;
     }},
    {"gemma2-2b",
     [] {
       ModelConfig c = base("gemma2", 2304, 26, 8, 4, 9216, 256000, 256);
       c.tie_word_embeddings = true;
       c.rope_theta = 10000;
       c.sliding_window = 4096;
       for (int64_t l = 0; l < 26; ++l) c.sliding_layers.push_back(l % 2 == 0);
       c.query_pre_attn_scalar = 256;
       c.attn_logit_softcapping = 50;
       c.final_logit_softcapping = 30;
       c.max_position_embeddings = 8192;
       c.bos_token_ids = {2};
       c.eos_token_ids = {1};
       return c;
     }},
    {"phi3-mini",
     [] {
       // Phi-3-mini-4k: 3.8B parameters, a 2047-token window on every layer.
       ModelConfig c = base("phi3", 3072, 32, 32, 32, 8192, 32064);
       c.rms_norm_eps = 1e-5;
       c.max_position_embeddings = 4096;
       c.rope_original_max_position_embeddings = 4096;
       c.sliding_window = 2047;
       c.bos_token_ids = {1};
       c.eos_token_ids = {32000};
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
  Weights w;
  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for_each_weight(w, c, [&](const std::string& name, Tensor&, std::vector<int64_t> shape, bool) {
    out.emplace_back(name, std::move(shape));
  });
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
    // Norm weights start near a scale of 1: 1 + noise, or noise alone where the norm scales by (1 + weight).
    const bool is_norm = name.ends_with("norm.weight");
    const double mean = is_norm && !config.norm_unit_offset ? 1.0 : 0.0;
    fill_normal(t, mix_seed(options.seed, name_hash(name)), mean, options.init_std);
    tensors.emplace_back(name, std::move(t));
  }
  tensors = checkpoint_tensors(std::move(tensors), config);

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
