// Model: a Llama-family decoder (Llama, Mistral, Qwen2, Qwen3, SmolLM, ...)
// loaded from a Hugging Face folder. One description of the family with
// per-architecture options; forward passes run over a KV cache.
#pragma once

#include <slm/tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace slm {

enum class RopeScaling { None, Linear, Llama3 };

struct ModelConfig {
  std::string model_type;  // llama, mistral, qwen2, qwen3
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless config.json says otherwise
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias (Qwen2 always; Llama and Qwen3 when attention_bias)
  bool output_bias = false;     // o_proj bias (Llama and Qwen3 when attention_bias)
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  int64_t sliding_window = 0;   // 0: full attention
  int64_t max_window_layers = 0;  // Qwen2/3: layers below this index keep full attention
  double initializer_range = 0.02;
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  DType torch_dtype = DType::F32;

  // Reads config.json (and validates every field a decoder needs).
  static ModelConfig from_file(const std::filesystem::path& config_json);
  // The same from text; `source` names it in error messages.
  static ModelConfig from_json(const std::string& text, const std::string& source);
  // The config.json text Hugging Face transformers reads back to the same model.
  std::string to_json() const;
  // Sliding window of layer `layer` (0 = full attention).
  int64_t layer_window(int64_t layer) const;
  // Number of parameters the weights hold.
  int64_t parameter_count() const;
};

// Sampling defaults that generation_config.json may carry.
struct GenerationDefaults {
  std::vector<int32_t> eos_token_ids;
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  static GenerationDefaults from_file(const std::filesystem::path& generation_config_json);
};

enum class Device { CPU, CUDA };
enum class AttentionImpl { Eager, Flash };

struct LoadOptions {
  std::optional<DType> dtype;  // nullopt: keep what the file holds (no copy)
  std::string device = "auto";  // auto, cpu, cuda, cuda:N
};

// Threads the CPU kernels use (default: every core the process may run on).
void set_num_threads(int threads);
int num_threads();

// Parses "--attn" values: eager, flash, auto (= flash).
AttentionImpl parse_attention(const std::string& name);

struct LayerWeights {
  Tensor attn_norm, q_proj, k_proj, v_proj, o_proj;
  Tensor q_bias, k_bias, v_bias;  // empty unless attention_bias
  Tensor o_bias;                  // empty unless output_bias
  Tensor q_norm, k_norm;          // empty unless qk_norm
  Tensor mlp_norm, gate_proj, up_proj, down_proj;
};

struct Weights {
  Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;
  Tensor lm_head;  // [vocab, hidden]; the embedding itself when tied
};

// Every tensor of `weights` under its Hugging Face name, in the order a
// checkpoint lists them; absent ones (biases, q/k norms) and a tied lm_head
// are left out. The pointers let a caller replace tensors in place.
std::vector<std::pair<std::string, Tensor*>> named_weights(Weights& weights, const ModelConfig& config);
std::vector<std::pair<std::string, const Tensor*>> named_weights(const Weights& weights, const ModelConfig& config);

// A low-rank update beside a linear layer, added at run time without touching
// the layer's weight: y += scale · B·(A·x), a LoRA adapter.
struct LowRankUpdate {
  Tensor A;  // [rank, in], f32
  Tensor B;  // [out, rank], f32
  float scale = 0.0f;
  bool empty() const { return A.empty(); }
};

// The updates of one layer, named as its LayerWeights; empty ones are skipped.
struct LayerAdapter {
  LowRankUpdate q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
};

// Keys and values of every layer for positions [0, length), stored in f32,
// f16 or bf16 (--kv-dtype). Memory is allocated once for `capacity` positions.
class KVCache {
 public:
  KVCache(const ModelConfig& config, int64_t capacity, DType dtype = DType::F32);
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  void set_length(int64_t length);  // truncate (e.g. to reuse a shared prefix)
  void clear() { length_ = 0; }
  DType dtype() const { return keys_.dtype(); }
  // [kv_heads, capacity, head_dim] for layer l, in dtype().
  void* keys(int64_t layer) const { return static_cast<uint8_t*>(keys_.data()) + layer * layer_bytes_; }
  void* values(int64_t layer) const { return static_cast<uint8_t*>(values_.data()) + layer * layer_bytes_; }
  size_t bytes() const { return keys_.nbytes() + values_.nbytes(); }

 private:
  int64_t capacity_;
  int64_t length_ = 0;
  size_t layer_bytes_;
  Tensor keys_, values_;
};

class Model {
 public:
  // Loads DIR/config.json and the weights (model.safetensors or the shards
  // listed in model.safetensors.index.json), memory-mapped.
  static Model load(const std::filesystem::path& dir, const LoadOptions& options = {});
  Model(ModelConfig config, Weights weights);
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  DType dtype() const;  // the dtype of the linear weights in memory
  size_t weight_bytes() const;
  Device device() const { return Device::CPU; }

  void set_attention(AttentionImpl impl) { attention_ = impl; }
  AttentionImpl attention() const { return attention_; }

  // Low-rank updates forward adds to the linear layers' outputs, one entry
  // per layer (empty: none); the weights stay as loaded. slm::attach_adapter
  // (slm/train.h) reads them from a PEFT folder.
  void set_adapter(std::vector<LayerAdapter> adapter);
  const std::vector<LayerAdapter>& adapter() const { return adapter_; }

  // Runs `tokens` at positions cache.length() onward, appends their keys and
  // values to the cache, and returns the final hidden states (after the last
  // norm), [tokens.size(), hidden], valid until the next call.
  std::span<const float> forward(std::span<const int32_t> tokens, KVCache& cache);
  // Logits [rows, vocab] for `rows` consecutive hidden states.
  void logits(std::span<const float> hidden, int64_t rows, std::span<float> out) const;
  // Convenience: forward, then the logits of the last token.
  std::span<const float> forward_last_logits(std::span<const int32_t> tokens, KVCache& cache);

 private:
  struct Scratch;
  ModelConfig config_;
  Weights weights_;
  AttentionImpl attention_ = AttentionImpl::Flash;
  std::vector<LayerAdapter> adapter_;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace slm

namespace slm {

// Named shapes of real models, for `slm create --shape`: smollm2-135m,
// qwen2.5-0.5b, llama3.2-1b, and "tiny" (a few hundred thousand parameters).
ModelConfig shape_preset(const std::string& name);
std::vector<std::string> shape_preset_names();

struct CreateOptions {
  DType dtype = DType::F32;
  uint64_t seed = 0;
  double init_std = 0.02;  // linear and embedding weights ~ N(0, init_std²); norms ~ 1 + N(0, init_std²)
  int64_t shards = 1;      // > 1: model-0000i-of-0000n.safetensors + model.safetensors.index.json
};

// Writes config.json, generation_config.json and randomly initialised
// safetensors weights into `out` (created when missing), each file atomically.
void create_random_model(const ModelConfig& config, const CreateOptions& options, const std::filesystem::path& out);

}  // namespace slm
