// The Llama-family decoder: one description with per-architecture options
// (q/k/v bias, q/k norm, sliding window, tied head, rope scaling).
#include <slm/error.h>
#include <slm/model.h>

#include "io/safetensors.h"
#include "kernels/cpu/kernels.h"
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

namespace slm {

namespace {

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

// Reads tensors by name, checks each against the shape config.json implies,
// and converts linear weights to the requested dtype (or keeps the mapping).
class WeightReader {
 public:
  WeightReader(const WeightFiles& files, std::optional<DType> dtype) : files_(files), dtype_(dtype) {}

  Tensor matrix(const std::string& name, std::vector<int64_t> shape) {
    Tensor t = checked(name, std::move(shape));
    if (!dtype_ || *dtype_ == t.dtype()) return t;
    Tensor converted = t.to(*dtype_);
    files_.release(t);  // otherwise the mapped original stays resident beside the copy
    return converted;
  }
  // Norm weights and biases are tiny and read on every token: kept in f32.
  Tensor vector_f32(const std::string& name, int64_t size) { return checked(name, {size}).to(DType::F32); }

  void check_all_used() const {
    for (const std::string& name : files_.names()) {
      if (used_.count(name) == 0 && !ignorable(name)) {
        fail(files_.describe(), ": unexpected tensor \"", name, "\" (not part of this architecture per config.json)");
      }
    }
  }

 private:
  static bool ignorable(const std::string& name) {
    // Old checkpoints store the rotary frequencies; tied models may still carry lm_head.
    return name.ends_with("rotary_emb.inv_freq") || name == "lm_head.weight";
  }

  Tensor checked(const std::string& name, std::vector<int64_t> shape) {
    if (!files_.contains(name)) fail(files_.describe(), ": missing tensor \"", name, "\"");
    Tensor t = files_.tensor(name);
    if (t.shape() != shape) {
      const Tensor expected(t.dtype(), shape, nullptr, nullptr);
      fail(files_.describe(), ": tensor \"", name, "\" has shape ", t.shape_string(), ", config.json implies ",
           expected.shape_string());
    }
    used_.insert(name);
    // Writers lay tensors out aligned, but the format does not promise it:
    // an unaligned tensor is copied once rather than read unaligned forever.
    if (reinterpret_cast<uintptr_t>(t.data()) % dtype_bytes(t.dtype(), 1) != 0) {
      Tensor aligned = Tensor::zeros(t.dtype(), t.shape());
      std::memcpy(aligned.data(), t.data(), t.nbytes());
      return aligned;
    }
    return t;
  }

  const WeightFiles& files_;
  std::optional<DType> dtype_;
  std::set<std::string> used_;
};

Weights read_weights(const ModelConfig& c, const WeightFiles& files, std::optional<DType> dtype) {
  WeightReader r(files, dtype);
  const int64_t H = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim, kv_dim = c.num_key_value_heads * c.head_dim;
  Weights w;
  w.embed_tokens = r.matrix("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    LayerWeights L;
    L.attn_norm = r.vector_f32(p + "input_layernorm.weight", H);
    L.q_proj = r.matrix(p + "self_attn.q_proj.weight", {q_dim, H});
    L.k_proj = r.matrix(p + "self_attn.k_proj.weight", {kv_dim, H});
    L.v_proj = r.matrix(p + "self_attn.v_proj.weight", {kv_dim, H});
    L.o_proj = r.matrix(p + "self_attn.o_proj.weight", {H, q_dim});
    if (c.attention_bias) {
      L.q_bias = r.vector_f32(p + "self_attn.q_proj.bias", q_dim);
      L.k_bias = r.vector_f32(p + "self_attn.k_proj.bias", kv_dim);
      L.v_bias = r.vector_f32(p + "self_attn.v_proj.bias", kv_dim);
    }
    if (c.output_bias) L.o_bias = r.vector_f32(p + "self_attn.o_proj.bias", H);
    if (c.qk_norm) {
      L.q_norm = r.vector_f32(p + "self_attn.q_norm.weight", c.head_dim);
      L.k_norm = r.vector_f32(p + "self_attn.k_norm.weight", c.head_dim);
    }
    L.mlp_norm = r.vector_f32(p + "post_attention_layernorm.weight", H);
    L.gate_proj = r.matrix(p + "mlp.gate_proj.weight", {c.intermediate_size, H});
    L.up_proj = r.matrix(p + "mlp.up_proj.weight", {c.intermediate_size, H});
    L.down_proj = r.matrix(p + "mlp.down_proj.weight", {H, c.intermediate_size});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = r.vector_f32("model.norm.weight", H);
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : r.matrix("lm_head.weight", {c.vocab_size, H});
  r.check_all_used();
  return w;
}

// named_weights for Weights and const Weights alike.
template <class W, class T>
std::vector<std::pair<std::string, T*>> list_weights(W& w, const ModelConfig& c) {
  std::vector<std::pair<std::string, T*>> out;
  auto add = [&](std::string name, T& t) {
    if (!t.empty()) out.emplace_back(std::move(name), &t);
  };
  add("model.embed_tokens.weight", w.embed_tokens);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    const std::string p = layer_prefix(static_cast<int64_t>(l));
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
  return out;
}

void check_update(const LowRankUpdate& u, const Tensor& W, int64_t layer, const char* module) {
  if (u.empty()) return;
  if (u.A.dtype() != DType::F32 || u.B.dtype() != DType::F32 || u.A.rank() != 2 || u.B.rank() != 2 ||
      u.A.dim(1) != W.dim(1) || u.B.dim(0) != W.dim(0) || u.A.dim(0) != u.B.dim(1)) {
    fail("adapter of layer ", layer, " ", module, ": A ", u.A.shape_string(), " and B ", u.B.shape_string(),
         " (f32) do not fit the weight ", W.shape_string());
  }
}

}  // namespace

std::vector<std::pair<std::string, Tensor*>> named_weights(Weights& weights, const ModelConfig& config) {
  return list_weights<Weights, Tensor>(weights, config);
}

std::vector<std::pair<std::string, const Tensor*>> named_weights(const Weights& weights, const ModelConfig& config) {
  return list_weights<const Weights, const Tensor>(weights, config);
}

AttentionImpl parse_attention(const std::string& name) {
  if (name == "eager") return AttentionImpl::Eager;
  if (name == "flash" || name == "auto") return AttentionImpl::Flash;
  fail("--attn: unknown attention implementation \"", name, "\" (expected eager, flash or auto)");
}

KVCache::KVCache(const ModelConfig& config, int64_t capacity, DType dtype) : capacity_(capacity) {
  if (capacity <= 0) fail("KV cache capacity must be positive, got ", capacity);
  if (is_quantized(dtype)) fail("--kv-dtype: expected f32, f16 or bf16, got ", dtype_name(dtype));
  const std::vector<int64_t> shape{config.num_hidden_layers, config.num_key_value_heads, capacity, config.head_dim};
  keys_ = Tensor::zeros(dtype, shape);
  values_ = Tensor::zeros(dtype, shape);
  layer_bytes_ = keys_.nbytes() / static_cast<size_t>(config.num_hidden_layers);
}

void KVCache::set_length(int64_t length) {
  if (length < 0 || length > capacity_) fail("KV cache length ", length, " outside [0, ", capacity_, "]");
  length_ = length;
}

struct Model::Scratch {
  std::vector<float> inv_freq;
  std::vector<float> cos, sin;
  std::vector<float> x, h, q, k, v, attn, gate, up, scores, last_logits;
  std::vector<float> adapter_u;  // A·x of the adapter being applied
};

Model::Model(ModelConfig config, Weights weights)
    : config_(std::move(config)), weights_(std::move(weights)), scratch_(std::make_unique<Scratch>()) {
  scratch_->inv_freq = rope_inverse_frequencies(config_);
}

Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::filesystem::path& dir, const LoadOptions& options) {
  if (options.device.starts_with("cuda")) {
    fail("--device ", options.device, ": this build of slm has no CUDA backend (only the CPU is available)");
  }
  if (options.device != "auto" && options.device != "cpu") {
    fail("--device: unknown device \"", options.device, "\" (expected auto, cpu or cuda[:N])");
  }
  if (!std::filesystem::is_directory(dir)) fail(dir.string(), ": not a model folder");
  ModelConfig config = ModelConfig::from_file(dir / "config.json");
  const WeightFiles files = WeightFiles::open(dir);
  Weights weights = read_weights(config, files, options.dtype);
  return Model(std::move(config), std::move(weights));
}

DType Model::dtype() const { return weights_.layers.front().q_proj.dtype(); }

size_t Model::weight_bytes() const {
  size_t total = 0;
  for (const auto& [name, t] : named_weights(weights_, config_)) total += t->nbytes();
  return total;
}

void Model::set_adapter(std::vector<LayerAdapter> adapter) {
  if (!adapter.empty() && adapter.size() != weights_.layers.size()) {
    fail("adapter for ", adapter.size(), " layers, the model has ", weights_.layers.size());
  }
  for (size_t l = 0; l < adapter.size(); ++l) {
    const LayerAdapter& a = adapter[l];
    const LayerWeights& L = weights_.layers[l];
    const auto layer = static_cast<int64_t>(l);
    check_update(a.q_proj, L.q_proj, layer, "q_proj");
    check_update(a.k_proj, L.k_proj, layer, "k_proj");
    check_update(a.v_proj, L.v_proj, layer, "v_proj");
    check_update(a.o_proj, L.o_proj, layer, "o_proj");
    check_update(a.gate_proj, L.gate_proj, layer, "gate_proj");
    check_update(a.up_proj, L.up_proj, layer, "up_proj");
    check_update(a.down_proj, L.down_proj, layer, "down_proj");
  }
  adapter_ = std::move(adapter);
}

std::span<const float> Model::forward(std::span<const int32_t> tokens, KVCache& cache) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t pos0 = cache.length();
  if (n == 0) fail("forward: no tokens");
  if (pos0 + n > cache.capacity()) {
    fail("context is full: ", pos0, " + ", n, " tokens exceed the KV cache capacity of ", cache.capacity());
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
  const int64_t H = c.hidden_size, hd = c.head_dim, half = hd / 2;
  const int64_t q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd;
  Scratch& s = *scratch_;
  auto size = [](int64_t count) { return static_cast<size_t>(count); };
  s.x.resize(size(n * H));
  s.h.resize(size(n * H));
  s.q.resize(size(n * q_dim));
  s.k.resize(size(n * kv_dim));
  s.v.resize(size(n * kv_dim));
  s.attn.resize(size(n * q_dim));
  s.gate.resize(size(n * c.intermediate_size));
  s.up.resize(size(n * c.intermediate_size));
  s.cos.resize(size(n * half));
  s.sin.resize(size(n * half));
  for (int64_t i = 0; i < n; ++i) {
    const float position = static_cast<float>(pos0 + i);
    for (int64_t j = 0; j < half; ++j) {
      const float angle = position * s.inv_freq[size(j)];
      s.cos[size(i * half + j)] = std::cos(angle);
      s.sin[size(i * half + j)] = std::sin(angle);
    }
  }

  const float eps = static_cast<float>(c.rms_norm_eps);
  cpu::embedding(weights_.embed_tokens, tokens.data(), n, s.x.data());
  static const LayerAdapter kNoAdapter;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = weights_.layers[size(l)];
    const LayerAdapter& A = adapter_.empty() ? kNoAdapter : adapter_[size(l)];
    auto bias = [](const Tensor& b) { return b.empty() ? nullptr : b.data_as<const float>(); };
    auto adapt = [&](const LowRankUpdate& u, const float* in, float* out) {
      if (u.empty()) return;
      s.adapter_u.resize(size(n * u.A.dim(0)));
      cpu::low_rank_add(in, n, u.A, u.B, u.scale, s.adapter_u.data(), out);
    };
    cpu::rmsnorm(s.x.data(), L.attn_norm.data_as<const float>(), eps, n, H, s.h.data());
    cpu::matmul_group(s.h.data(), n, H,
                      {{&L.q_proj, bias(L.q_bias), s.q.data()},
                       {&L.k_proj, bias(L.k_bias), s.k.data()},
                       {&L.v_proj, bias(L.v_bias), s.v.data()}});
    adapt(A.q_proj, s.h.data(), s.q.data());
    adapt(A.k_proj, s.h.data(), s.k.data());
    adapt(A.v_proj, s.h.data(), s.v.data());
    if (c.qk_norm) {
      cpu::rmsnorm(s.q.data(), L.q_norm.data_as<const float>(), eps, n * c.num_attention_heads, hd, s.q.data());
      cpu::rmsnorm(s.k.data(), L.k_norm.data_as<const float>(), eps, n * c.num_key_value_heads, hd, s.k.data());
    }
    cpu::rope(s.q.data(), n, c.num_attention_heads, hd, s.cos.data(), s.sin.data());
    cpu::rope(s.k.data(), n, c.num_key_value_heads, hd, s.cos.data(), s.sin.data());

    void* keys = cache.keys(l);
    void* values = cache.values(l);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t g = 0; g < c.num_key_value_heads; ++g) {
        const int64_t row = g * cache.capacity() + pos0 + i;
        cpu::store_row(s.k.data() + (i * c.num_key_value_heads + g) * hd, hd, cache.dtype(), keys, row);
        cpu::store_row(s.v.data() + (i * c.num_key_value_heads + g) * hd, hd, cache.dtype(), values, row);
      }
    }
    const cpu::AttentionShape shape{n,  pos0, c.num_attention_heads, c.num_key_value_heads, hd, cache.capacity(),
                                    c.layer_window(l), cache.dtype()};
    if (attention_ == AttentionImpl::Eager) {
      cpu::attention_eager(s.q.data(), keys, values, shape, s.scores, s.attn.data());
    } else {
      cpu::attention_flash(s.q.data(), keys, values, shape, s.attn.data());
    }
    cpu::matmul(s.attn.data(), n, q_dim, L.o_proj, bias(L.o_bias), s.h.data());
    adapt(A.o_proj, s.attn.data(), s.h.data());
    cpu::add_inplace(s.x.data(), s.h.data(), n * H);

    cpu::rmsnorm(s.x.data(), L.mlp_norm.data_as<const float>(), eps, n, H, s.h.data());
    cpu::matmul_group(s.h.data(), n, H, {{&L.gate_proj, nullptr, s.gate.data()}, {&L.up_proj, nullptr, s.up.data()}});
    adapt(A.gate_proj, s.h.data(), s.gate.data());
    adapt(A.up_proj, s.h.data(), s.up.data());
    cpu::silu_mul(s.gate.data(), s.up.data(), s.gate.data(), n * c.intermediate_size);
    cpu::matmul(s.gate.data(), n, c.intermediate_size, L.down_proj, nullptr, s.h.data());
    adapt(A.down_proj, s.gate.data(), s.h.data());
    cpu::add_inplace(s.x.data(), s.h.data(), n * H);
  }
  cache.set_length(pos0 + n);
  cpu::rmsnorm(s.x.data(), weights_.final_norm.data_as<const float>(), eps, n, H, s.h.data());
  return {s.h.data(), size(n * H)};
}

void Model::logits(std::span<const float> hidden, int64_t rows, std::span<float> out) const {
  const int64_t H = config_.hidden_size;
  if (static_cast<int64_t>(hidden.size()) < rows * H || static_cast<int64_t>(out.size()) < rows * config_.vocab_size) {
    fail("logits: buffers too small for ", rows, " rows");
  }
  cpu::matmul(hidden.data(), rows, H, weights_.lm_head, nullptr, out.data());
}

std::span<const float> Model::forward_last_logits(std::span<const int32_t> tokens, KVCache& cache) {
  const std::span<const float> hidden = forward(tokens, cache);
  const int64_t H = config_.hidden_size;
  Scratch& s = *scratch_;
  s.last_logits.resize(static_cast<size_t>(config_.vocab_size));
  std::span<float> out(s.last_logits);
  logits(hidden.subspan(hidden.size() - static_cast<size_t>(H)), 1, out);
  return out;
}

}  // namespace slm
