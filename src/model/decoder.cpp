#include "model/decoder.h"

#include <slm/random.h>

#include "model/modules.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

namespace slm::decoder {

namespace {

size_t sz(int64_t n) { return static_cast<size_t>(n); }

const float* bias_of(const Tensor* b) { return b && !b->empty() ? b->data_as<const float>() : nullptr; }

LoraDropout dropout_of(const Pass& p, int64_t layer, LoraModule m) {
  return {p.dropout, mix_seed(p.dropout_seed, static_cast<uint64_t>(layer * 16 + static_cast<int64_t>(m)))};
}

// The widest rank any run adds to module m of this layer: run r keeps its
// A·x at row0 · rank_stride of lora_u, so runs of different ranks never overlap.
int64_t rank_stride(const Pass& p, int64_t layer, LoraModule m) {
  int64_t rank = 0;
  for (const AdapterRun& run : p.adapters) {
    if (run.adapter) rank = std::max(rank, run.adapter->at(layer, m).rank());
  }
  return rank;
}

// y += each run's adapter update of module m (y = W·x was computed for every row at once).
void add_adapters(const Pass& p, int64_t layer, LoraModule m, const float* x, int64_t in, float* y, int64_t out,
                  LayerActivations& a) {
  const int64_t stride = rank_stride(p, layer, m);
  if (stride == 0) return;
  Buffer& u = a.lora_u[static_cast<size_t>(m)];
  u.resize(sz(p.rows * stride));
  for (const AdapterRun& run : p.adapters) {
    if (!run.adapter || run.adapter->at(layer, m).empty()) continue;
    p.model.backend().lora_forward(x + run.row0 * in, run.rows, run.adapter->at(layer, m), dropout_of(p, layer, m),
                                   u.data() + run.row0 * stride, y + run.row0 * out, p.scratch);
  }
}

// y_j += each run's update of a fused module (Phi-3's qkv_proj,
// gate_up_proj): B·(A·x) over the fused rows, split into the outputs of its
// parts, `ys` in fused_parts' order.
void add_fused_adapter(const Pass& p, int64_t layer, LoraModule fused, std::span<float* const> ys, const float* x,
                       int64_t in, LayerActivations& a) {
  const int64_t stride = rank_stride(p, layer, fused);
  if (stride == 0) return;
  const std::vector<LoraModule> parts = fused_parts(fused);
  const int64_t out = lora_dims(p.model.config(), fused).second;
  Buffer& u = a.lora_u[static_cast<size_t>(fused)];
  u.resize(sz(p.rows * stride));
  a.fused_update.assign(sz(p.rows * out), 0.0f);
  for (const AdapterRun& run : p.adapters) {
    if (!run.adapter || run.adapter->at(layer, fused).empty()) continue;
    p.model.backend().lora_forward(x + run.row0 * in, run.rows, run.adapter->at(layer, fused),
                                   dropout_of(p, layer, fused), u.data() + run.row0 * stride,
                                   a.fused_update.data() + run.row0 * out, p.scratch);
    int64_t column = 0;
    for (size_t j = 0; j < parts.size(); ++j) {
      const int64_t width = lora_dims(p.model.config(), parts[j]).second;
      for (int64_t r = run.row0; r < run.row0 + run.rows; ++r) {
        const float* update = a.fused_update.data() + r * out + column;
        float* y = ys[j] + r * width;
        for (int64_t i = 0; i < width; ++i) y[i] += update[i];
      }
      column += width;
    }
  }
}

// Products of one input by several modules (q/k/v, gate/up) in one pass,
// then their adapters, and those of the module fusing them where it has one.
void linear_group(const Pass& p, int64_t layer, std::initializer_list<std::pair<LoraModule, float*>> modules,
                  const float* x, LayerActivations& a, std::optional<LoraModule> fused = std::nullopt) {
  const LayerWeights& L = p.model.weights().layers[sz(layer)];
  std::array<Projection, 3> projections{};
  std::array<float*, 3> outputs{};
  size_t count = 0;
  for (const auto& [m, y] : modules) {
    outputs[count] = y;
    projections[count++] = {&module_of(L, m), bias_of(module_bias(L, m)), y};
  }
  const int64_t in = projections[0].weight->dim(1);
  p.model.backend().matmul_group(x, p.rows, in, std::span(projections.data(), count));
  for (const auto& [m, y] : modules) add_adapters(p, layer, m, x, in, y, module_of(L, m).dim(0), a);
  if (fused) add_fused_adapter(p, layer, *fused, std::span(outputs.data(), count), x, in, a);
}

void linear(const Pass& p, int64_t layer, LoraModule m, const float* x, float* y, LayerActivations& a) {
  linear_group(p, layer, {{m, y}}, x, a);
}

// dx += ∂L/∂x of a fused module's adapter, and its gradients where the pass
// trains it; `dys` the gradients of its parts' outputs.
void fused_adapter_backward(const Pass& p, int64_t layer, LoraModule fused, std::initializer_list<const float*> dys,
                            const float* x, float* dx, const LayerActivations& a, const Gradients& g,
                            BackwardScratch& s) {
  if (!g.adapter) return;
  const int64_t stride = rank_stride(p, layer, fused);
  const std::vector<LoraModule> parts = fused_parts(fused);
  const ModelConfig& c = p.model.config();
  const int64_t in = lora_dims(c, fused).first, out = lora_dims(c, fused).second;
  for (const AdapterRun& run : p.adapters) {
    if (run.adapter != g.trained || run.adapter->at(layer, fused).empty()) continue;
    s.dfused.resize(sz(run.rows * out));
    int64_t column = 0;
    for (size_t j = 0; j < parts.size(); ++j) {
      const int64_t width = lora_dims(c, parts[j]).second;
      const float* dy = dys.begin()[j];
      for (int64_t r = 0; r < run.rows; ++r) {
        std::copy_n(dy + (run.row0 + r) * width, width, s.dfused.data() + r * out + column);
      }
      column += width;
    }
    p.model.backend().lora_backward(x + run.row0 * in, a.lora_u[static_cast<size_t>(fused)].data() + run.row0 * stride,
                                    s.dfused.data(), run.rows, run.adapter->at(layer, fused),
                                    dropout_of(p, layer, fused), g.adapter->at(layer, fused), dx + run.row0 * in,
                                    p.scratch);
  }
}

// dx (+)= ∂L/∂x of linear(), and the gradients of what the pass trains.
void linear_backward(const Pass& p, int64_t layer, LoraModule m, const float* x, const float* dy, float* dx,
                     bool accumulate, const LayerActivations& a, const Gradients& g) {
  const Backend& be = p.model.backend();
  const Tensor& W = module_of(p.model.weights().layers[sz(layer)], m);
  const int64_t out = W.dim(0), in = W.dim(1);
  be.matmul_backward_input(dy, p.rows, W, dx, accumulate);
  if (g.weights) {
    LayerWeights& G = g.weights->layers[sz(layer)];
    Tensor& dW = module_of(G, m);
    be.matmul_backward_weight(dy, x, p.rows, out, in, dW.data_as<float>(), true);
    if (Tensor* db = module_bias(G, m); db && !db->empty()) be.bias_backward(dy, p.rows, out, db->data_as<float>());
  }
  if (!g.adapter) return;
  const int64_t stride = rank_stride(p, layer, m);
  for (const AdapterRun& run : p.adapters) {
    if (run.adapter != g.trained || run.adapter->at(layer, m).empty()) continue;
    be.lora_backward(x + run.row0 * in, a.lora_u[static_cast<size_t>(m)].data() + run.row0 * stride,
                     dy + run.row0 * out, run.rows, run.adapter->at(layer, m), dropout_of(p, layer, m),
                     g.adapter->at(layer, m), dx + run.row0 * in, p.scratch);
  }
}

// The sizes a block works with, and the pass's scratch grown to them.
struct BlockShape {
  int64_t N, H, hd, I, heads, kv_heads, q_dim, kv_dim;
  float eps;
};
BlockShape block_shape(const Pass& p) {
  const ModelConfig& c = p.model.config();
  const int64_t N = p.rows, H = c.hidden_size, I = c.intermediate_size;
  p.h.resize(sz(N * std::max(H, I)));
  p.act.resize(sz(N * I));
  return {N, H, c.head_dim, I, c.num_attention_heads, c.num_key_value_heads, c.num_attention_heads * c.head_dim,
          c.num_key_value_heads * c.head_dim, static_cast<float>(c.rms_norm_eps)};
}

float* weight_grad(const Gradients& g, Tensor LayerWeights::*member, int64_t layer) {
  return g.weights ? (g.weights->layers[sz(layer)].*member).data_as<float>() : nullptr;
}

const float* f32(const Tensor& t) { return t.data_as<const float>(); }

// The rotary tables of layer l: the sliding layers' own where the model has them.
std::pair<const float*, const float*> rope_of(const Pass& p, int64_t layer) {
  if (!p.model.local_rope_frequencies().empty() && p.model.config().layer_window(layer) > 0) {
    return {p.rope.local_cos, p.rope.local_sin};
  }
  return {p.rope.cos, p.rope.sin};
}

// out = act(gate) · up, the MLP's gated activation (SwiGLU or GeGLU).
void activate(const Pass& p, const float* gate, const float* up, float* out, int64_t n) {
  if (p.model.config().hidden_activation == Activation::GeluTanh) {
    p.model.backend().gelu_tanh_mul(gate, up, out, n);
  } else {
    p.model.backend().silu_mul(gate, up, out, n);
  }
}

void activate_backward(const Pass& p, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                       int64_t n) {
  if (p.model.config().hidden_activation == Activation::GeluTanh) {
    p.model.backend().gelu_tanh_mul_backward(gate, up, dout, dgate, dup, n);
  } else {
    p.model.backend().silu_mul_backward(gate, up, dout, dgate, dup, n);
  }
}

}  // namespace

void rope_angles(const Model& model, const int32_t* positions, const int32_t* extents, int64_t n, RopeBuffers& out) {
  const ModelConfig& c = model.config();
  const bool longrope = c.rope_scaling == RopeScaling::LongRope;
  const auto scale = static_cast<float>(longrope ? c.rope_attention_factor : 1.0);
  const auto fill = [&](int64_t i, const std::vector<float>& inv_freq, float factor, Buffer& cos, Buffer& sin) {
    const auto half = static_cast<int64_t>(inv_freq.size());
    const auto position = static_cast<float>(positions[i]);
    for (int64_t j = 0; j < half; ++j) {
      const float angle = position * inv_freq[sz(j)];
      cos[sz(i * half + j)] = std::cos(angle) * factor;
      sin[sz(i * half + j)] = std::sin(angle) * factor;
    }
  };
  const std::vector<float>& main = model.rope_frequencies();
  const std::vector<float>& local = model.local_rope_frequencies();
  const std::vector<float>& long_context = model.long_rope_frequencies();
  out.cos.resize(sz(n) * main.size());
  out.sin.resize(sz(n) * main.size());
  out.local_cos.resize(sz(n) * local.size());
  out.local_sin.resize(sz(n) * local.size());
  for (int64_t i = 0; i < n; ++i) {
    const bool reaches_past = longrope && extents[i] > c.rope_original_max_position_embeddings;
    fill(i, reaches_past ? long_context : main, scale, out.cos, out.sin);
    if (!local.empty()) fill(i, local, 1.0f, out.local_cos, out.local_sin);
  }
}

void embed(const Model& model, const int32_t* ids, int64_t n, float* out) {
  model.backend().embedding(model.weights().embed_tokens, ids, n, out);
  const float scale = model.config().embedding_scale();
  if (scale != 1.0f) model.backend().scale_inplace(out, scale, n * model.config().hidden_size);
}

void embed_backward(const Model& model, float* dout, const int32_t* ids, int64_t n, float* dtable) {
  const int64_t H = model.config().hidden_size;
  const float scale = model.config().embedding_scale();
  if (scale != 1.0f) model.backend().scale_inplace(dout, scale, n * H);
  model.backend().embedding_backward(dout, ids, n, H, dtable);
}

void layer_forward(const Pass& p, int64_t l, const float* x, float* x_out, LayerActivations& a) {
  const ModelConfig& c = p.model.config();
  const Backend& be = p.model.backend();
  const LayerWeights& W = p.model.weights().layers[sz(l)];
  const auto [N, H, hd, I, heads, kv_heads, q_dim, kv_dim, eps] = block_shape(p);
  const float offset = c.norm_offset();
  const auto softcap = static_cast<float>(c.attn_logit_softcapping);
  a.q.resize(sz(N * q_dim));
  a.k.resize(sz(N * kv_dim));
  a.v.resize(sz(N * kv_dim));
  a.attn.resize(sz(N * q_dim));
  a.x_mid.resize(sz(N * H));
  a.gate.resize(sz(N * I));
  a.up.resize(sz(N * I));

  // Attention block: x_mid = x + [post-norm](o(attention(rope(q(h)), rope(k(h)), v(h)))), h = norm(x).
  be.rmsnorm(x, f32(W.attn_norm), offset, eps, N, H, p.h.data());
  linear_group(p, l, {{LoraModule::Q, a.q.data()}, {LoraModule::K, a.k.data()}, {LoraModule::V, a.v.data()}},
               p.h.data(), a, LoraModule::QKV);
  if (c.qk_norm) {
    const bool keep = p.cache == nullptr;  // the backward reads the values before the norm
    if (keep) {
      a.q_pre = a.q;
      a.k_pre = a.k;
    }
    be.rmsnorm(keep ? a.q_pre.data() : a.q.data(), f32(W.q_norm), offset, eps, N * heads, hd, a.q.data());
    be.rmsnorm(keep ? a.k_pre.data() : a.k.data(), f32(W.k_norm), offset, eps, N * kv_heads, hd, a.k.data());
  }
  const auto [cos, sin] = rope_of(p, l);
  be.rope(a.q.data(), N, heads, hd, cos, sin);
  be.rope(a.k.data(), N, kv_heads, hd, cos, sin);
  if (p.cache) {
    const PagedKV kv{p.cache->keys(l), p.cache->values(l), p.cache->dtype(), p.cache->block_tokens(), kv_heads, hd};
    be.store_kv(a.k.data(), a.v.data(), p.runs, kv);
    const AttentionBatch batch{p.runs, heads, c.layer_window(l), c.attention_scale(), softcap};
    if (p.model.attention() == AttentionImpl::Eager) {
      be.attention_eager(a.q.data(), kv, batch, a.attn.data(), p.scores);
    } else {
      be.attention_flash(a.q.data(), kv, batch, a.attn.data());
    }
  } else {
    a.lse.resize(sz(N * heads));
    const SequenceAttentionShape shape{
        p.train_batch, p.train_seq, heads, kv_heads, hd, c.layer_window(l), c.attention_scale(), softcap};
    be.attention_train_forward(a.q.data(), a.k.data(), a.v.data(), shape, a.attn.data(), a.lse.data());
  }
  if (c.post_norms) {
    a.attn_out.resize(sz(N * H));
    linear(p, l, LoraModule::O, a.attn.data(), a.attn_out.data(), a);
    be.rmsnorm(a.attn_out.data(), f32(W.post_attn_norm), offset, eps, N, H, a.x_mid.data());
  } else {
    linear(p, l, LoraModule::O, a.attn.data(), a.x_mid.data(), a);
  }
  be.add_inplace(a.x_mid.data(), x, N * H);

  // MLP block: x_out = x_mid + [post-norm](down(act(gate(h)) · up(h))), h = norm(x_mid).
  be.rmsnorm(a.x_mid.data(), f32(W.mlp_norm), offset, eps, N, H, p.h.data());
  linear_group(p, l, {{LoraModule::Gate, a.gate.data()}, {LoraModule::Up, a.up.data()}}, p.h.data(), a,
               LoraModule::GateUp);
  activate(p, a.gate.data(), a.up.data(), p.act.data(), N * I);
  if (c.post_norms) {
    a.mlp_out.resize(sz(N * H));
    linear(p, l, LoraModule::Down, p.act.data(), a.mlp_out.data(), a);
    be.rmsnorm(a.mlp_out.data(), f32(W.post_mlp_norm), offset, eps, N, H, x_out);
  } else {
    linear(p, l, LoraModule::Down, p.act.data(), x_out, a);
  }
  be.add_inplace(x_out, a.x_mid.data(), N * H);
}

void layer_backward(const Pass& p, int64_t l, const float* x_in, const LayerActivations& a, const Gradients& g,
                    Buffer& dx, BackwardScratch& s) {
  const ModelConfig& c = p.model.config();
  const Backend& be = p.model.backend();
  const LayerWeights& W = p.model.weights().layers[sz(l)];
  const auto [N, H, hd, I, heads, kv_heads, q_dim, kv_dim, eps] = block_shape(p);
  const float offset = c.norm_offset();
  s.dh.resize(sz(N * H));
  s.dact.resize(sz(N * I));
  s.dgate.resize(sz(N * I));
  s.dup.resize(sz(N * I));
  s.dattn.resize(sz(N * q_dim));
  s.dq.resize(sz(N * q_dim));
  s.dk.resize(sz(N * kv_dim));
  s.dv.resize(sz(N * kv_dim));
  if (c.post_norms) s.dpost.resize(sz(N * H));

  // MLP block; dx holds ∂L/∂x_out, the residual's share of ∂L/∂x_mid too.
  const float* d_down = dx.data();
  if (c.post_norms) {
    be.rmsnorm_backward(dx.data(), a.mlp_out.data(), f32(W.post_mlp_norm), offset, eps, N, H, s.dpost.data(),
                        weight_grad(g, &LayerWeights::post_mlp_norm, l), false);
    d_down = s.dpost.data();
  }
  activate(p, a.gate.data(), a.up.data(), p.act.data(), N * I);
  linear_backward(p, l, LoraModule::Down, p.act.data(), d_down, s.dact.data(), false, a, g);
  activate_backward(p, a.gate.data(), a.up.data(), s.dact.data(), s.dgate.data(), s.dup.data(), N * I);
  be.rmsnorm(a.x_mid.data(), f32(W.mlp_norm), offset, eps, N, H, p.h.data());
  linear_backward(p, l, LoraModule::Gate, p.h.data(), s.dgate.data(), s.dh.data(), false, a, g);
  linear_backward(p, l, LoraModule::Up, p.h.data(), s.dup.data(), s.dh.data(), true, a, g);
  fused_adapter_backward(p, l, LoraModule::GateUp, {s.dgate.data(), s.dup.data()}, p.h.data(), s.dh.data(), a, g, s);
  be.rmsnorm_backward(s.dh.data(), a.x_mid.data(), f32(W.mlp_norm), offset, eps, N, H, dx.data(),
                      weight_grad(g, &LayerWeights::mlp_norm, l), true);

  // Attention block.
  const float* d_o = dx.data();
  if (c.post_norms) {
    be.rmsnorm_backward(dx.data(), a.attn_out.data(), f32(W.post_attn_norm), offset, eps, N, H, s.dpost.data(),
                        weight_grad(g, &LayerWeights::post_attn_norm, l), false);
    d_o = s.dpost.data();
  }
  linear_backward(p, l, LoraModule::O, a.attn.data(), d_o, s.dattn.data(), false, a, g);
  const SequenceAttentionShape shape{p.train_batch,       p.train_seq, heads, kv_heads, hd, c.layer_window(l),
                                     c.attention_scale(), static_cast<float>(c.attn_logit_softcapping)};
  be.attention_train_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), s.dattn.data(), a.lse.data(), shape,
                              s.dq.data(), s.dk.data(), s.dv.data());
  const auto [cos, sin] = rope_of(p, l);
  be.rope_backward(s.dq.data(), N, heads, hd, cos, sin);
  be.rope_backward(s.dk.data(), N, kv_heads, hd, cos, sin);
  if (c.qk_norm) {
    be.rmsnorm_backward(s.dq.data(), a.q_pre.data(), f32(W.q_norm), offset, eps, N * heads, hd, s.dq.data(),
                        weight_grad(g, &LayerWeights::q_norm, l), false);
    be.rmsnorm_backward(s.dk.data(), a.k_pre.data(), f32(W.k_norm), offset, eps, N * kv_heads, hd, s.dk.data(),
                        weight_grad(g, &LayerWeights::k_norm, l), false);
  }
  be.rmsnorm(x_in, f32(W.attn_norm), offset, eps, N, H, p.h.data());
  linear_backward(p, l, LoraModule::Q, p.h.data(), s.dq.data(), s.dh.data(), false, a, g);
  linear_backward(p, l, LoraModule::K, p.h.data(), s.dk.data(), s.dh.data(), true, a, g);
  linear_backward(p, l, LoraModule::V, p.h.data(), s.dv.data(), s.dh.data(), true, a, g);
  fused_adapter_backward(p, l, LoraModule::QKV, {s.dq.data(), s.dk.data(), s.dv.data()}, p.h.data(), s.dh.data(), a,
                         g, s);
  be.rmsnorm_backward(s.dh.data(), x_in, f32(W.attn_norm), offset, eps, N, H, dx.data(),
                      weight_grad(g, &LayerWeights::attn_norm, l), true);
}

}  // namespace slm::decoder
