// Model: loading a Hugging Face folder, and forward passes over a batch of
// sequences through the one decoder (model/decoder.h).
#include <slm/error.h>
#include <slm/model.h>

#include "backend/backend.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/decoder.h"
#include "model/device_map.h"
#include "model/gguf_model.h"
#include "model/rope.h"
#include "model/weight_layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

namespace slm {

namespace {

// Reads tensors by name, checks each against the shape config.json implies,
// and converts linear weights to the requested dtype (or keeps the mapping).
class WeightReader {
 public:
  WeightReader(const WeightSource& files, std::optional<DType> dtype) : files_(files), dtype_(dtype) {}

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
    // (Quantized blocks start with their f16 scale.)
    const size_t alignment = is_quantized(t.dtype()) ? 2 : dtype_bytes(t.dtype(), 1);
    if (reinterpret_cast<uintptr_t>(t.data()) % alignment != 0) {
      Tensor aligned = Tensor::zeros(t.dtype(), t.shape());
      std::memcpy(aligned.data(), t.data(), t.nbytes());
      return aligned;
    }
    return t;
  }

  const WeightSource& files_;
  std::optional<DType> dtype_;
  std::set<std::string> used_;
};

// A weight source with each fused checkpoint tensor served as its parts:
// views of its rows, sized as the config implies (a fused tensor of another
// shape fails naming both).
class SplitSource : public WeightSource {
 public:
  SplitSource(const WeightSource& inner, const ModelConfig& c) : inner_(inner) {
    std::map<std::string, std::vector<int64_t>> shapes;
    Weights w;
    w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
    for_each_weight(w, c, [&](const std::string& name, Tensor&, std::vector<int64_t> shape, bool) {
      shapes[name] = std::move(shape);
    });
    for (FusedTensor& fused : fused_tensors(c)) {
      std::vector<int64_t> shape = shapes.at(fused.parts.front());
      shape[0] = 0;
      int64_t row = 0;
      for (const std::string& part : fused.parts) {
        const int64_t rows = shapes.at(part)[0];
        parts_[part] = {fused.name, row, rows};
        row += rows;
      }
      shape[0] = row;
      fused_[fused.name] = std::move(shape);
    }
  }

  // A part is always there: tensor() names the fused tensor when it is missing.
  bool contains(const std::string& name) const override {
    return parts_.count(name) != 0 || (fused_.count(name) == 0 && inner_.contains(name));
  }
  Tensor tensor(const std::string& name) const override {
    const auto it = parts_.find(name);
    if (it == parts_.end()) return inner_.tensor(name);
    const Part& part = it->second;
    if (!inner_.contains(part.fused)) fail(inner_.describe(), ": missing tensor \"", part.fused, "\"");
    const Tensor whole = inner_.tensor(part.fused);
    const std::vector<int64_t>& shape = fused_.at(part.fused);
    if (whole.shape() != shape) {
      fail(inner_.describe(), ": tensor \"", part.fused, "\" has shape ", whole.shape_string(), ", config.json implies ",
           Tensor(whole.dtype(), shape, nullptr, nullptr).shape_string());
    }
    return whole.rows(part.row, part.rows);
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const std::string& name : inner_.names()) {
      if (fused_.count(name) == 0) out.push_back(name);
    }
    for (const auto& [name, part] : parts_) {
      if (inner_.contains(part.fused)) out.push_back(name);
    }
    return out;
  }
  std::string describe() const override { return inner_.describe(); }
  void release(const Tensor& view) const override { inner_.release(view); }

 private:
  struct Part {
    std::string fused;
    int64_t row, rows;
  };
  const WeightSource& inner_;
  std::map<std::string, Part> parts_;
  std::map<std::string, std::vector<int64_t>> fused_;
};

}  // namespace

std::vector<FusedTensor> fused_tensors(const ModelConfig& c) {
  std::vector<FusedTensor> out;
  if (!c.fused_projections) return out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "self_attn.qkv_proj.weight",
                   {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"}});
    out.push_back({p + "mlp.gate_up_proj.weight", {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}});
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(std::vector<std::pair<std::string, Tensor>> tensors,
                                                               const ModelConfig& c) {
  for (const FusedTensor& fused : fused_tensors(c)) {
    std::vector<Tensor> parts;
    size_t first = tensors.size();
    for (const std::string& part : fused.parts) {
      const auto it = std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.first == part; });
      if (it == tensors.end()) continue;
      parts.push_back(it->second);
      first = std::min(first, static_cast<size_t>(it - tensors.begin()));
    }
    if (parts.empty()) continue;  // not a list of weights (an adapter's, say)
    if (parts.size() != fused.parts.size()) fail("checkpoint_tensors: ", fused.name, " lacks some of its parts");
    tensors[first] = {fused.name, concat_rows(parts)};
    std::erase_if(tensors, [&](const auto& t) {
      return std::find(fused.parts.begin(), fused.parts.end(), t.first) != fused.parts.end();
    });
  }
  return tensors;
}

Weights read_weights(const ModelConfig& c, const WeightSource& source, std::optional<DType> dtype) {
  const std::optional<SplitSource> split = c.fused_projections ? std::optional<SplitSource>(std::in_place, source, c)
                                                               : std::nullopt;
  const WeightSource& files = split ? static_cast<const WeightSource&>(*split) : source;
  WeightReader r(files, dtype);
  Weights w;
  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for_each_weight(w, c, [&](const std::string& name, Tensor& t, std::vector<int64_t> shape, bool matrix) {
    t = matrix ? r.matrix(name, std::move(shape)) : r.vector_f32(name, shape[0]);
  });
  if (c.tie_word_embeddings) w.lm_head = w.embed_tokens;
  r.check_all_used();
  return w;
}

namespace {

// named_weights for Weights and const Weights alike.
template <class W, class T>
std::vector<std::pair<std::string, T*>> list_weights(W& w, const ModelConfig& c) {
  std::vector<std::pair<std::string, T*>> out;
  for_each_weight(w, c, [&](const std::string& name, T& t, const std::vector<int64_t>&, bool) {
    if (!t.empty()) out.emplace_back(name, &t);
  });
  return out;
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

Model::Model(ModelConfig config, Weights weights)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(&backend_for(Device::CPU)),
      inv_freq_(rope_inverse_frequencies(config_)),
      local_inv_freq_(config_.rope_local_theta > 0 ? rope_inverse_frequencies(config_, RopeTable::Local)
                                                   : std::vector<float>{}),
      long_inv_freq_(config_.rope_scaling == RopeScaling::LongRope ? rope_inverse_frequencies(config_, RopeTable::Long)
                                                                   : std::vector<float>{}) {}

Model Model::load(const std::filesystem::path& dir, const LoadOptions& options) {
  if (is_gguf_file(dir)) return load_gguf_model(dir, options);
  if (!std::filesystem::is_directory(dir)) fail(dir.string(), ": not a model folder (nor a GGUF file)");
  ModelConfig config = ModelConfig::from_file(dir / "config.json");
  check_placement(options, config.num_hidden_layers);
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

Device Model::device() const { return backend_->device(); }

namespace {

// The runs of a batch: each sequence's consecutive rows, checked to continue
// what the cache holds; and the runs of rows that add the same adapter.
void plan_batch(const ModelConfig& c, const Batch& b, const KVCache& cache, decoder::Workspace& w) {
  const int64_t n = b.size();
  if (n == 0) fail("forward: no tokens");
  if (b.positions.size() != b.tokens.size() || b.sequences.size() != b.tokens.size() ||
      b.logits.size() != b.tokens.size() || b.adapters.size() != b.tokens.size()) {
    fail("forward: the batch's tokens, positions, sequences, logits and adapters differ in length");
  }
  w.runs.clear();
  w.run_sequences.clear();
  w.adapters.clear();
  w.output_rows.clear();
  for (int64_t r = 0; r < n; ++r) {
    const int32_t id = b.tokens[static_cast<size_t>(r)];
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
    const int32_t seq = b.sequences[static_cast<size_t>(r)];
    const int32_t pos = b.positions[static_cast<size_t>(r)];
    if (w.runs.empty() || w.run_sequences.back() != seq) {
      if (std::find(w.run_sequences.begin(), w.run_sequences.end(), seq) != w.run_sequences.end()) {
        fail("forward: the rows of sequence ", seq, " are not consecutive in the batch");
      }
      if (seq < 0) fail("forward: sequence id ", seq, " is negative");
      if (pos != cache.length(seq)) {
        fail("forward: sequence ", seq, " continues at position ", cache.length(seq), ", the batch gives ", pos);
      }
      w.runs.push_back({r, 0, pos, nullptr});
      w.run_sequences.push_back(seq);
    } else if (pos != w.runs.back().q_start + w.runs.back().n_queries) {
      fail("forward: positions of sequence ", seq, " are not consecutive at row ", r);
    }
    ++w.runs.back().n_queries;
    const Adapter* adapter = b.adapters[static_cast<size_t>(r)];
    if (adapter && adapter->layers() != c.num_hidden_layers) {
      fail("forward: adapter \"", adapter->name(), "\" has ", adapter->layers(), " layers, the model ",
           c.num_hidden_layers);
    }
    if (w.adapters.empty() || w.adapters.back().adapter != adapter) w.adapters.push_back({r, 0, adapter});
    ++w.adapters.back().rows;
    if (b.logits[static_cast<size_t>(r)]) w.output_rows.push_back(r);
  }
  for (const auto& run : w.runs) {
    if (run.q_start + run.n_queries > c.max_position_embeddings) {
      fail("context is full: sequence at ", run.q_start, " + ", run.n_queries, " tokens exceeds the model's context of ",
           c.max_position_embeddings, " (max_position_embeddings)");
    }
  }
}

// `tokens` continuing sequence `seq` as the cache's own batch; every row's
// logits wanted, or only the last one's.
const Batch& single_sequence(std::span<const int32_t> tokens, KVCache& cache, const Adapter* adapter, int32_t seq,
                             bool every_row) {
  Batch& b = cache.workspace().single;
  b.clear();
  const int64_t start = cache.length(seq);
  for (size_t i = 0; i < tokens.size(); ++i) {
    b.add(tokens[i], static_cast<int32_t>(start + static_cast<int64_t>(i)), seq, every_row || i + 1 == tokens.size(),
          adapter);
  }
  return b;
}

}  // namespace

std::span<const float> Model::forward(const Batch& b, KVCache& cache) const {
  const ModelConfig& c = config_;
  decoder::Workspace& w = cache.workspace();
  plan_batch(c, b, cache, w);
  int64_t needed = 0;
  for (size_t i = 0; i < w.runs.size(); ++i) {
    needed += cache.blocks_needed(w.run_sequences[i], w.runs[i].q_start + w.runs[i].n_queries);
  }
  if (needed > cache.free_blocks()) {
    fail("the KV cache is full: the batch needs ", needed, " more blocks of ", cache.block_tokens(),
         " tokens, ", cache.free_blocks(), " of ", cache.block_count(), " are free");
  }
  for (size_t i = 0; i < w.runs.size(); ++i) {
    cache.reserve(w.run_sequences[i], w.runs[i].q_start + w.runs[i].n_queries);
  }
  for (size_t i = 0; i < w.runs.size(); ++i) w.runs[i].block_table = cache.block_table(w.run_sequences[i]);

  const int64_t n = b.size(), H = c.hidden_size;
  w.extents.resize(static_cast<size_t>(n));
  for (const auto& run : w.runs) {
    std::fill_n(w.extents.begin() + run.row0, run.n_queries, static_cast<int32_t>(run.q_start + run.n_queries));
  }
  decoder::rope_angles(*this, b.positions.data(), w.extents.data(), n, w.rope);
  w.x.resize(static_cast<size_t>(n * H));
  decoder::embed(*this, b.tokens.data(), n, w.x.data());
  const decoder::Pass pass{*this, n, w.rope.tables(), w.adapters, &cache, w.runs, 0, 0, 0.0, 0, w.h, w.act, w.scratch, w.scores};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) decoder::layer_forward(pass, l, w.x.data(), w.x.data(), w.layer);
  for (size_t i = 0; i < w.runs.size(); ++i) {
    const auto& run = w.runs[i];
    const Adapter* adapter = b.adapters[static_cast<size_t>(run.row0)];
    cache.append(w.run_sequences[i],
                 std::span(b.tokens).subspan(static_cast<size_t>(run.row0), static_cast<size_t>(run.n_queries)),
                 adapter ? adapter->id() : 0);
  }
  // Only the rows whose logits are wanted go through the final norm.
  const auto out_rows = static_cast<int64_t>(w.output_rows.size());
  w.hidden.resize(static_cast<size_t>(out_rows * H));
  for (int64_t i = 0; i < out_rows; ++i) {
    std::copy_n(w.x.data() + w.output_rows[static_cast<size_t>(i)] * H, H, w.h.data() + i * H);
  }
  backend_->rmsnorm(w.h.data(), weights_.final_norm.data_as<const float>(), c.norm_offset(),
                    static_cast<float>(c.rms_norm_eps), out_rows, H, w.hidden.data());
  return {w.hidden.data(), w.hidden.size()};
}

std::span<const float> Model::forward_logits(const Batch& b, KVCache& cache) const {
  const std::span<const float> hidden = forward(b, cache);
  decoder::Workspace& w = cache.workspace();
  const auto rows = static_cast<int64_t>(hidden.size()) / config_.hidden_size;
  w.logits.resize(static_cast<size_t>(rows * config_.vocab_size));
  logits(hidden, rows, w.logits);
  return {w.logits.data(), w.logits.size()};
}

std::span<const float> Model::forward(std::span<const int32_t> tokens, KVCache& cache, const Adapter* adapter,
                                      int32_t seq) const {
  return forward(single_sequence(tokens, cache, adapter, seq, true), cache);
}

void Model::logits(std::span<const float> hidden, int64_t rows, std::span<float> out) const {
  const int64_t H = config_.hidden_size;
  if (static_cast<int64_t>(hidden.size()) < rows * H || static_cast<int64_t>(out.size()) < rows * config_.vocab_size) {
    fail("logits: buffers too small for ", rows, " rows");
  }
  backend_->matmul(hidden.data(), rows, H, weights_.lm_head, nullptr, out.data());
  if (config_.final_logit_softcapping > 0) {
    backend_->softcap_inplace(out.data(), static_cast<float>(config_.final_logit_softcapping), rows * config_.vocab_size);
  }
}

std::span<const float> Model::forward_last_logits(std::span<const int32_t> tokens, KVCache& cache,
                                                  const Adapter* adapter, int32_t seq) const {
  return forward_logits(single_sequence(tokens, cache, adapter, seq, false), cache);
}

}  // namespace slm
