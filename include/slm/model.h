// Model: a decoder of the Llama family and its relatives (Llama, Mistral,
// Qwen2, Qwen3, SmolLM, Gemma 2, Gemma 3, ...) loaded from a Hugging Face folder. One description of the family with
// per-architecture options; forward passes run over a KV cache.
#pragma once

#include <slm/adapter.h>
#include <slm/kv_cache.h>
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

enum class RopeScaling { None, Linear, Llama3, LongRope };
// The MLP's gate activation: silu (SwiGLU) or the tanh approximation of GELU
// (GeGLU, transformers' gelu_pytorch_tanh).
enum class Activation { SiLU, GeluTanh };

struct ModelConfig {
  std::string model_type;  // llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3
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
  // A divisor per rotary frequency (head_dim/2 of them), applied after
  // rope_scaling: how GGUF files carry Llama 3's scaling (rope_freqs.weight).
  std::vector<float> rope_freq_factors;
  // longrope (Phi-3): a divisor per rotary frequency for sequences that stay
  // within rope_original_max_position_embeddings (short) and for those that
  // reach past it (long), and the factor cos and sin are multiplied by.
  std::vector<float> rope_short_factor, rope_long_factor;
  double rope_attention_factor = 1.0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias (Qwen2 always; Llama and Qwen3 when attention_bias)
  bool output_bias = false;     // o_proj bias (Llama and Qwen3 when attention_bias)
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  // The checkpoint holds q/k/v as one qkv_proj and gate/up as one
  // gate_up_proj (Phi-3); in memory they are the usual five matrices.
  bool fused_projections = false;
  int64_t sliding_window = 0;   // 0: full attention
  int64_t max_window_layers = 0;  // Qwen2/3: layers below this index keep full attention
  // Gemma: which layers slide their window (config.json's layer_types); empty
  // for the families whose window follows sliding_window alone.
  std::vector<bool> sliding_layers;
  // Rotary base of the sliding layers (Gemma 3's rope_local_base_freq, no
  // rope_scaling); 0: every layer uses rope_theta.
  double rope_local_theta = 0.0;
  Activation hidden_activation = Activation::SiLU;
  bool norm_unit_offset = false;  // RMSNorm scales by (1 + weight) (Gemma)
  bool post_norms = false;        // a norm on the attention and MLP outputs before each residual add (Gemma)
  bool scale_embeddings = false;  // embeddings times sqrt(hidden_size), rounded to torch_dtype (Gemma)
  double query_pre_attn_scalar = 0.0;    // scores scaled by its -1/2 power (Gemma); 0: head_dim's
  double attn_logit_softcapping = 0.0;   // scores become cap * tanh(score / cap) (Gemma 2); 0: none
  double final_logit_softcapping = 0.0;  // the same on the logits
  double initializer_range = 0.02;
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  DType torch_dtype = DType::F32;

  // Reads config.json (and validates every field a decoder needs).
  static ModelConfig from_file(const std::filesystem::path& config_json);
  // DIR/config.json of a model folder, or the metadata of a GGUF file.
  static ModelConfig from_model_path(const std::filesystem::path& model);
  // The same from text; `source` names it in error messages.
  static ModelConfig from_json(const std::string& text, const std::string& source);
  // The config.json text Hugging Face transformers reads back to the same model.
  std::string to_json() const;
  // Sets the bias and q/k-norm options as model_type's family has them
  // (attention_bias where the family makes biases optional); fails for an
  // unknown model_type.
  void set_family_options(bool attention_bias);
  // Sliding window of layer `layer` (0 = full attention).
  int64_t layer_window(int64_t layer) const;
  // Number of parameters the weights hold.
  int64_t parameter_count() const;
  // What attention scores are multiplied by: query_pre_attn_scalar^-1/2 or head_dim^-1/2.
  float attention_scale() const;
  // What embeddings are multiplied by (1 unless scale_embeddings).
  float embedding_scale() const;
  // The weight offset of every RMSNorm: 1 when it scales by (1 + weight).
  float norm_offset() const { return norm_unit_offset ? 1.0f : 0.0f; }
};

// The factor longrope multiplies cos and sin by when rope_scaling leaves it
// out (transformers' default): sqrt(1 + ln(factor) / ln(original)), 1 for factor <= 1.
double longrope_attention_factor(double factor, int64_t original_max_position);

// Sampling defaults that generation_config.json may carry.
struct GenerationDefaults {
  std::vector<int32_t> eos_token_ids;
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  static GenerationDefaults from_file(const std::filesystem::path& generation_config_json);
};

enum class AttentionImpl { Eager, Flash };

struct LoadOptions {
  std::optional<DType> dtype;  // nullopt: keep what the file holds (no copy)
  std::string device = "auto";  // auto, cpu, cuda, cuda:N
  int64_t gpu_layers = -1;      // --gpu-layers: the first N layers on the GPU (-1: all)
  std::filesystem::path device_map;  // --device-map: a JSON file of module name → device
};

// Threads the CPU kernels use (default: every core the process may run on).
void set_num_threads(int threads);
int num_threads();
// The cores no other process is running on right now (at least 1): the
// default thread count, since a thread that shares its core with a busy
// process stalls every other thread at each barrier of a parallel region.
int idle_cores();

// Parses "--attn" values: eager, flash, auto (= flash).
AttentionImpl parse_attention(const std::string& name);

struct LayerWeights {
  Tensor attn_norm, q_proj, k_proj, v_proj, o_proj;
  Tensor q_bias, k_bias, v_bias;  // empty unless attention_bias
  Tensor o_bias;                  // empty unless output_bias
  Tensor q_norm, k_norm;          // empty unless qk_norm
  Tensor post_attn_norm;           // empty unless post_norms
  Tensor mlp_norm, gate_proj, up_proj, down_proj;
  Tensor post_mlp_norm;            // empty unless post_norms
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
// Named tensors (named_weights' names) as the checkpoint holds them: where
// the family fuses projections (Phi-3's qkv_proj, gate_up_proj), the parts
// replaced by one tensor of their rows (a copy) where the first of them
// stood. Lists without those names (an adapter's) come back unchanged.
std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(std::vector<std::pair<std::string, Tensor>> tensors,
                                                               const ModelConfig& config);

// The tokens of one forward call: many sequences at once, each token with
// its sequence, its position, whether its logits are wanted and the adapter
// its linear layers add (null: none), as llama.cpp's llama_batch. The rows
// of one sequence are consecutive and continue it: the first stands at
// KVCache::length(seq). Sequences of different lengths, some prefilling and
// some decoding, share one call.
struct Batch {
  std::vector<int32_t> tokens, positions, sequences;
  std::vector<uint8_t> logits;
  std::vector<const Adapter*> adapters;

  void add(int32_t token, int32_t position, int32_t sequence, bool want_logits, const Adapter* adapter = nullptr) {
    tokens.push_back(token);
    positions.push_back(position);
    sequences.push_back(sequence);
    logits.push_back(want_logits ? 1 : 0);
    adapters.push_back(adapter);
  }
  void clear() {
    tokens.clear();
    positions.clear();
    sequences.clear();
    logits.clear();
    adapters.clear();
  }
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

class Backend;

class Model {
 public:
  // Loads DIR/config.json and the weights (model.safetensors or the shards
  // listed in model.safetensors.index.json), memory-mapped; or a GGUF file
  // (docs/gguf.md: config from its metadata, the types slm has mapped, K-quants
  // widened once).
  static Model load(const std::filesystem::path& dir, const LoadOptions& options = {});
  Model(ModelConfig config, Weights weights);
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  DType dtype() const;  // the dtype of the linear weights in memory
  size_t weight_bytes() const;
  Device device() const;

  void set_attention(AttentionImpl impl) { attention_ = impl; }
  AttentionImpl attention() const { return attention_; }

  // The backend every forward of this model runs on (the CPU today).
  const Backend& backend() const { return *backend_; }
  // Rotary inverse frequencies, head_dim/2 of them (rope scaling applied;
  // longrope's short factors),
  // and those of the sliding layers where they have their own base (else empty).
  const std::vector<float>& rope_frequencies() const { return inv_freq_; }
  const std::vector<float>& local_rope_frequencies() const { return local_inv_freq_; }
  // longrope's long factors (else empty).
  const std::vector<float>& long_rope_frequencies() const { return long_inv_freq_; }

  // Runs every token of `batch`, writing their keys and values into `cache`
  // (which takes the blocks they need), and returns the final hidden states
  // (after the last norm) of the rows whose logits are wanted, [rows, hidden]
  // in batch order, valid until the cache's next forward. The model is only
  // read: callers with their own caches may run it at once from several
  // threads. Fails, changing nothing, when the pool lacks the blocks.
  std::span<const float> forward(const Batch& batch, KVCache& cache) const;
  // The same, then the logits of those rows, [rows, vocab].
  std::span<const float> forward_logits(const Batch& batch, KVCache& cache) const;
  // Logits [rows, vocab] for `rows` consecutive hidden states.
  void logits(std::span<const float> hidden, int64_t rows, std::span<float> out) const;

  // One sequence: runs `tokens` at positions cache.length(seq) onward and
  // returns the hidden states of every one of them, [tokens.size(), hidden].
  std::span<const float> forward(std::span<const int32_t> tokens, KVCache& cache, const Adapter* adapter = nullptr,
                                 int32_t seq = 0) const;
  // One sequence: the logits of its last token.
  std::span<const float> forward_last_logits(std::span<const int32_t> tokens, KVCache& cache,
                                             const Adapter* adapter = nullptr, int32_t seq = 0) const;

 private:
  ModelConfig config_;
  Weights weights_;
  AttentionImpl attention_ = AttentionImpl::Flash;
  const Backend* backend_;
  std::vector<float> inv_freq_, local_inv_freq_, long_inv_freq_;
};

// {in, out} of LoRA module m's matrix as the config sizes it (a fused
// module's out is its parts' together: q + 2·kv for qkv_proj).
std::pair<int64_t, int64_t> lora_dims(const ModelConfig& config, LoraModule m);

// The PEFT adapter in `dir` (adapter_config.json + adapter_model.safetensors)
// for `base`: every tensor checked against the layer it adapts, a missing or
// misshapen one named with both shapes. `name` names it in a batch's
// requests (default: the folder's name).
Adapter load_adapter(const Model& base, const std::filesystem::path& dir, std::string name = {});

}  // namespace slm

namespace slm {

// Named shapes of real models, for `slm create --shape`: smollm2-135m,
// qwen2.5-0.5b, llama3.2-1b, gemma3-270m, gemma3-1b, gemma2-2b, phi3-mini, and "tiny"
// (a few hundred thousand parameters).
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
