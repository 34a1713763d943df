// The training step of a Llama-family decoder with LoRA adapters: a forward
// over whole sequences that keeps what the backward needs, the backward from
// the loss down to every adapter, then AdamW. Each block's forward and
// backward sit side by side in the order they run (llm.c style); the frozen
// weights are only ever read.
#include <slm/error.h>
#include <slm/train.h>

#include "core/atomic_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "kernels/cpu/backward.h"
#include "kernels/cpu/kernels.h"
#include "train/lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numbers>
#include <sstream>

#include <nlohmann/json.hpp>

namespace slm {

namespace train {
namespace {

using Buffer = std::vector<float>;

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// Rotary frequencies as Hugging Face computes them, rope_scaling applied.
// The same formula as the inference decoder's (src/model/llama.cpp).
std::vector<float> rope_inverse_frequencies(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> inv(sz(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(exponent));
    if (c.rope_scaling == RopeScaling::Linear) {
      f /= c.rope_factor;
    } else if (c.rope_scaling == RopeScaling::Llama3) {
      const double old_context = static_cast<double>(c.rope_original_max_position_embeddings);
      const double low_wavelen = old_context / c.rope_low_freq_factor;
      const double high_wavelen = old_context / c.rope_high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= c.rope_factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_context / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1.0 - smooth) * f / c.rope_factor + smooth * f;
      }
    }
    inv[sz(i)] = static_cast<float>(f);
  }
  return inv;
}

// What one layer's backward needs from its forward. The normed inputs h1/h2
// and the MLP activation are recomputed in backward (cheap next to keeping them).
struct LayerActivations {
  Buffer x_in;           // residual stream entering the layer [N, H]
  Buffer q, k, v;        // after bias, q/k norm and RoPE
  Buffer q_pre, k_pre;   // before the q/k norm (qk_norm models only)
  Buffer attn;           // attention output, o_proj's input [N, q_dim]
  Buffer lse;            // [B, heads, T]
  Buffer x_mid;          // residual stream after attention
  Buffer gate, up;       // MLP pre-activations [N, I]
  std::array<Buffer, kLoraModuleCount> lora_u;  // A·x of each adapter [N, r]
};

}  // namespace
}  // namespace train

using train::Buffer;
using train::LoraAdapter;
using train::LoraModule;
using train::sz;

struct Trainer::State {
  const Model* model;
  LoraOptions lora;
  OptimizerOptions optimizer;
  std::vector<LoraModule> targets;
  std::vector<std::array<LoraAdapter, train::kLoraModuleCount>> adapters;  // [layer][module]; inactive if untargeted
  std::vector<Tensor> moment1, moment2;  // AdamW state, parallel to parameters()
  int64_t step = 0;
  uint64_t forward_calls = 0;  // distinguishes the dropout masks of every forward
  std::vector<float> inv_freq;
  // Transposed copies of the frozen matrices [layer][module] and of lm_head,
  // only where they let backward use faster kernels (bf16 with bf16 dot
  // products): one more copy of the weights in exchange for bf16 products in dx.
  std::vector<std::array<Tensor, train::kLoraModuleCount>> transposed;
  Tensor lm_head_t;

  // Forward storage, sized for the last batch shape.
  std::vector<train::LayerActivations> layers;
  Buffer x_final, h_final, cos, sin;
  // Backward scratch.
  Buffer dx, dh, h, act, dact, dgate, dup, dattn, dq, dk, dv;
  std::vector<float> lora_scratch;

  LoraAdapter& adapter(int64_t layer, LoraModule m) { return adapters[sz(layer)][static_cast<size_t>(m)]; }

  std::vector<Tensor*> parameters() {
    std::vector<Tensor*> out;
    for (auto& layer : adapters) {
      for (LoraAdapter& a : layer) {
        if (!a.active()) continue;
        out.push_back(&a.A());
        out.push_back(&a.B());
      }
    }
    return out;
  }
  std::vector<Tensor*> gradients() {
    std::vector<Tensor*> out;
    for (auto& layer : adapters) {
      for (LoraAdapter& a : layer) {
        if (!a.active()) continue;
        out.push_back(&a.grad_A());
        out.push_back(&a.grad_B());
      }
    }
    return out;
  }

  uint64_t dropout_seed(int64_t layer, LoraModule m) const {
    return mix_seed(mix_seed(lora.seed, forward_calls), static_cast<uint64_t>(layer * 16 + static_cast<int64_t>(m)));
  }

  double run(const TrainBatch& batch, double grad_scale, bool backward);
  void forward_layer(int64_t l, int64_t B, int64_t T, const float* x, float* x_out, double dropout);
  void backward_layer(int64_t l, int64_t B, int64_t T, double dropout);

  // y (+)= W·x + bias, plus the adapter of module m when it has one.
  void linear(int64_t l, LoraModule m, const Tensor& W, const Tensor& bias, const float* x, int64_t N, int64_t K,
              float* y, double dropout) {
    cpu::matmul(x, N, K, W, bias.empty() ? nullptr : bias.data_as<const float>(), y);
    LoraAdapter& a = adapter(l, m);
    if (a.active()) {
      Buffer& u = layers[sz(l)].lora_u[static_cast<size_t>(m)];
      u.resize(sz(N * a.rank()));
      a.forward(x, N, dropout, dropout_seed(l, m), u.data(), y, lora_scratch);
    }
  }
  // dx (+)= ∂L/∂x of linear(), and the adapter's gradients.
  void linear_backward(int64_t l, LoraModule m, const Tensor& W, const float* x, const float* dy, int64_t N,
                       float* grad_x, bool accumulate, double dropout) {
    static const Tensor kNone;
    const Tensor& Wt = transposed.empty() ? kNone : transposed[sz(l)][static_cast<size_t>(m)];
    cpu::matmul_backward_input(dy, N, W, Wt, grad_x, accumulate);
    LoraAdapter& a = adapter(l, m);
    if (a.active()) {
      a.backward(x, layers[sz(l)].lora_u[static_cast<size_t>(m)].data(), dy, N, dropout, dropout_seed(l, m), grad_x,
                 lora_scratch);
    }
  }
};

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "cosine") return LrSchedule::Cosine;
  fail("--lr-schedule: unknown schedule \"", name, "\" (expected constant, linear or cosine)");
}

double learning_rate_at(const OptimizerOptions& o, int64_t step) {
  const double s = static_cast<double>(step);
  if (step < o.warmup_steps) return o.lr * s / static_cast<double>(std::max<int64_t>(1, o.warmup_steps));
  if (o.schedule == LrSchedule::Constant) return o.lr;
  const double span = static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps));
  const double progress = (s - static_cast<double>(o.warmup_steps)) / span;
  if (o.schedule == LrSchedule::Linear) return o.lr * std::max(0.0, 1.0 - progress);
  return o.lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

int64_t TrainBatch::counted_tokens() const {
  if (static_cast<int64_t>(labels.size()) != batch * seq) {
    fail("training batch: expected ", batch * seq, " labels, got ", labels.size());
  }
  int64_t count = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 1; t < seq; ++t) count += labels[sz(b * seq + t)] >= 0 ? 1 : 0;
  }
  return count;
}

Trainer::Trainer(const Model& model, const LoraOptions& lora, const OptimizerOptions& optimizer)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  const ModelConfig& c = model.config();
  if (lora.rank <= 0) fail("--lora-r: rank must be positive, got ", lora.rank);
  if (!(lora.alpha > 0)) fail("--lora-alpha: must be positive, got ", lora.alpha);
  if (!(lora.dropout >= 0 && lora.dropout < 1)) fail("--lora-dropout: must be in [0, 1), got ", lora.dropout);
  if (!(optimizer.lr > 0) || !std::isfinite(optimizer.lr)) fail("--lr: must be a positive number, got ", optimizer.lr);
  if (optimizer.schedule != LrSchedule::Constant && optimizer.total_steps <= 0) {
    fail("a linear or cosine learning-rate schedule needs the total number of steps");
  }
  s.model = &model;
  s.lora = lora;
  s.optimizer = optimizer;
  s.targets = train::parse_lora_targets(lora.targets);
  s.inv_freq = train::rope_inverse_frequencies(c);
  const int64_t H = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim, I = c.intermediate_size;
  // [in, out] of each module.
  const int64_t shapes[train::kLoraModuleCount][2] = {{H, q_dim}, {H, kv_dim}, {H, kv_dim}, {q_dim, H},
                                                      {H, I},     {H, I},      {I, H}};
  Rng rng(lora.seed);
  s.adapters.resize(sz(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (LoraModule m : s.targets) {
      const auto i = static_cast<size_t>(m);
      s.adapters[sz(l)][i] = LoraAdapter(shapes[i][0], shapes[i][1], lora.rank, lora.alpha, rng);
    }
  }
  if (cpu::transposed_backward_pays(model.dtype())) {
    s.transposed.resize(sz(c.num_hidden_layers));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const LayerWeights& L = model.weights().layers[sz(l)];
      const Tensor* matrices[train::kLoraModuleCount] = {&L.q_proj,    &L.k_proj,  &L.v_proj,   &L.o_proj,
                                                         &L.gate_proj, &L.up_proj, &L.down_proj};
      for (size_t m = 0; m < train::kLoraModuleCount; ++m) s.transposed[sz(l)][m] = cpu::transpose_weight(*matrices[m]);
    }
    if (cpu::transposed_backward_pays(model.weights().lm_head.dtype())) {
      s.lm_head_t = cpu::transpose_weight(model.weights().lm_head);
    }
  }
  for (Tensor* p : s.parameters()) {
    s.moment1.push_back(Tensor::zeros(DType::F32, p->shape()));
    s.moment2.push_back(Tensor::zeros(DType::F32, p->shape()));
  }
}

Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

void Trainer::State::forward_layer(int64_t l, int64_t B, int64_t T, const float* x, float* x_out, double dropout) {
  const ModelConfig& c = model->config();
  const LayerWeights& W = model->weights().layers[sz(l)];
  train::LayerActivations& a = layers[sz(l)];
  const int64_t N = B * T, H = c.hidden_size, hd = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd, I = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  a.x_in.assign(x, x + N * H);
  a.q.resize(sz(N * q_dim));
  a.k.resize(sz(N * kv_dim));
  a.v.resize(sz(N * kv_dim));
  a.attn.resize(sz(N * q_dim));
  a.lse.resize(sz(B * c.num_attention_heads * T));
  a.x_mid.resize(sz(N * H));
  a.gate.resize(sz(N * I));
  a.up.resize(sz(N * I));
  h.resize(sz(N * std::max(H, I)));
  act.resize(sz(N * I));

  // Attention block.
  cpu::rmsnorm(x, W.attn_norm.data_as<const float>(), eps, N, H, h.data());
  linear(l, LoraModule::Q, W.q_proj, W.q_bias, h.data(), N, H, a.q.data(), dropout);
  linear(l, LoraModule::K, W.k_proj, W.k_bias, h.data(), N, H, a.k.data(), dropout);
  linear(l, LoraModule::V, W.v_proj, W.v_bias, h.data(), N, H, a.v.data(), dropout);
  if (c.qk_norm) {
    a.q_pre = a.q;
    a.k_pre = a.k;
    cpu::rmsnorm(a.q_pre.data(), W.q_norm.data_as<const float>(), eps, N * c.num_attention_heads, hd, a.q.data());
    cpu::rmsnorm(a.k_pre.data(), W.k_norm.data_as<const float>(), eps, N * c.num_key_value_heads, hd, a.k.data());
  }
  cpu::rope(a.q.data(), N, c.num_attention_heads, hd, cos.data(), sin.data());
  cpu::rope(a.k.data(), N, c.num_key_value_heads, hd, cos.data(), sin.data());
  const cpu::SequenceAttentionShape shape{B, T, c.num_attention_heads, c.num_key_value_heads, hd, c.layer_window(l)};
  cpu::attention_train_forward(a.q.data(), a.k.data(), a.v.data(), shape, a.attn.data(), a.lse.data());
  linear(l, LoraModule::O, W.o_proj, W.o_bias, a.attn.data(), N, q_dim, a.x_mid.data(), dropout);
  cpu::add_inplace(a.x_mid.data(), x, N * H);

  // MLP block.
  cpu::rmsnorm(a.x_mid.data(), W.mlp_norm.data_as<const float>(), eps, N, H, h.data());
  linear(l, LoraModule::Gate, W.gate_proj, Tensor(), h.data(), N, H, a.gate.data(), dropout);
  linear(l, LoraModule::Up, W.up_proj, Tensor(), h.data(), N, H, a.up.data(), dropout);
  cpu::silu_mul(a.gate.data(), a.up.data(), act.data(), N * I);
  linear(l, LoraModule::Down, W.down_proj, Tensor(), act.data(), N, I, x_out, dropout);
  cpu::add_inplace(x_out, a.x_mid.data(), N * H);
}

// On entry dx holds ∂L/∂(layer output); on exit ∂L/∂(layer input).
void Trainer::State::backward_layer(int64_t l, int64_t B, int64_t T, double dropout) {
  const ModelConfig& c = model->config();
  const LayerWeights& W = model->weights().layers[sz(l)];
  train::LayerActivations& a = layers[sz(l)];
  const int64_t N = B * T, H = c.hidden_size, hd = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd, I = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  dh.resize(sz(N * H));
  dact.resize(sz(N * I));
  dgate.resize(sz(N * I));
  dup.resize(sz(N * I));
  dattn.resize(sz(N * q_dim));
  dq.resize(sz(N * q_dim));
  dk.resize(sz(N * kv_dim));
  dv.resize(sz(N * kv_dim));

  // MLP block: x_out = x_mid + down(silu(gate(h2)) · up(h2)), h2 = norm(x_mid).
  cpu::silu_mul(a.gate.data(), a.up.data(), act.data(), N * I);
  linear_backward(l, LoraModule::Down, W.down_proj, act.data(), dx.data(), N, dact.data(), false, dropout);
  cpu::silu_mul_backward(a.gate.data(), a.up.data(), dact.data(), dgate.data(), dup.data(), N * I);
  cpu::rmsnorm(a.x_mid.data(), W.mlp_norm.data_as<const float>(), eps, N, H, h.data());
  linear_backward(l, LoraModule::Gate, W.gate_proj, h.data(), dgate.data(), N, dh.data(), false, dropout);
  linear_backward(l, LoraModule::Up, W.up_proj, h.data(), dup.data(), N, dh.data(), true, dropout);
  cpu::rmsnorm_backward(dh.data(), a.x_mid.data(), W.mlp_norm.data_as<const float>(), eps, N, H, dx.data(), nullptr,
                        true);

  // Attention block: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1))), h1 = norm(x_in).
  linear_backward(l, LoraModule::O, W.o_proj, a.attn.data(), dx.data(), N, dattn.data(), false, dropout);
  const cpu::SequenceAttentionShape shape{B, T, c.num_attention_heads, c.num_key_value_heads, hd, c.layer_window(l)};
  cpu::attention_train_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), dattn.data(), a.lse.data(), shape,
                                dq.data(), dk.data(), dv.data());
  cpu::rope_backward(dq.data(), N, c.num_attention_heads, hd, cos.data(), sin.data());
  cpu::rope_backward(dk.data(), N, c.num_key_value_heads, hd, cos.data(), sin.data());
  if (c.qk_norm) {
    cpu::rmsnorm_backward(dq.data(), a.q_pre.data(), W.q_norm.data_as<const float>(), eps, N * c.num_attention_heads,
                          hd, dq.data(), nullptr, false);
    cpu::rmsnorm_backward(dk.data(), a.k_pre.data(), W.k_norm.data_as<const float>(), eps, N * c.num_key_value_heads,
                          hd, dk.data(), nullptr, false);
  }
  cpu::rmsnorm(a.x_in.data(), W.attn_norm.data_as<const float>(), eps, N, H, h.data());
  linear_backward(l, LoraModule::Q, W.q_proj, h.data(), dq.data(), N, dh.data(), false, dropout);
  linear_backward(l, LoraModule::K, W.k_proj, h.data(), dk.data(), N, dh.data(), true, dropout);
  linear_backward(l, LoraModule::V, W.v_proj, h.data(), dv.data(), N, dh.data(), true, dropout);
  cpu::rmsnorm_backward(dh.data(), a.x_in.data(), W.attn_norm.data_as<const float>(), eps, N, H, dx.data(), nullptr,
                        true);
}

double Trainer::State::run(const TrainBatch& batch, double grad_scale, bool backward) {
  const ModelConfig& c = model->config();
  const int64_t B = batch.batch, T = batch.seq, N = B * T, H = c.hidden_size, half = c.head_dim / 2;
  if (B <= 0 || T <= 0) fail("training batch: empty (", B, " sequences of ", T, " tokens)");
  if (static_cast<int64_t>(batch.tokens.size()) != N || static_cast<int64_t>(batch.labels.size()) != N) {
    fail("training batch: expected ", N, " tokens and labels, got ", batch.tokens.size(), " and ",
         batch.labels.size());
  }
  for (int32_t id : batch.tokens) {
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
  const double dropout = backward ? lora.dropout : 0.0;
  ++forward_calls;
  layers.resize(sz(c.num_hidden_layers));
  cos.resize(sz(N * half));
  sin.resize(sz(N * half));
  for (int64_t r = 0; r < N; ++r) {
    const float position = static_cast<float>(r % T);
    for (int64_t j = 0; j < half; ++j) {
      const float angle = position * inv_freq[sz(j)];
      cos[sz(r * half + j)] = std::cos(angle);
      sin[sz(r * half + j)] = std::sin(angle);
    }
  }
  // Next-token targets: position t predicts labels[t+1]; the last position of each sequence predicts nothing.
  std::vector<int32_t> next_tokens(sz(N), -100);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t + 1 < T; ++t) next_tokens[sz(b * T + t)] = batch.labels[sz(b * T + t + 1)];
  }

  Buffer x(sz(N * H)), next(sz(N * H));
  cpu::embedding(model->weights().embed_tokens, batch.tokens.data(), N, x.data());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    forward_layer(l, B, T, x.data(), next.data(), dropout);
    std::swap(x, next);
  }
  x_final = std::move(x);
  h_final.resize(sz(N * H));
  const float eps = static_cast<float>(c.rms_norm_eps);
  cpu::rmsnorm(x_final.data(), model->weights().final_norm.data_as<const float>(), eps, N, H, h_final.data());
  if (!backward) {
    return cpu::cross_entropy(h_final.data(), N, model->weights().lm_head, next_tokens.data(), 1.0f, nullptr, nullptr);
  }
  dh.resize(sz(N * H));
  const double loss = cpu::cross_entropy(h_final.data(), N, model->weights().lm_head, next_tokens.data(),
                                         static_cast<float>(grad_scale), dh.data(), nullptr, 64, lm_head_t);
  dx.resize(sz(N * H));
  cpu::rmsnorm_backward(dh.data(), x_final.data(), model->weights().final_norm.data_as<const float>(), eps, N, H,
                        dx.data(), nullptr, false);
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) backward_layer(l, B, T, dropout);
  return loss;
}

double Trainer::accumulate_gradients(const TrainBatch& batch, double grad_scale) {
  return state_->run(batch, grad_scale, true);
}

double Trainer::evaluate(const TrainBatch& batch) { return state_->run(batch, 0.0, false); }

void Trainer::zero_grad() {
  for (Tensor* g : state_->gradients()) std::memset(g->data(), 0, g->nbytes());
}

StepStats Trainer::step() {
  State& s = *state_;
  const OptimizerOptions& o = s.optimizer;
  std::vector<Tensor*> params = s.parameters(), grads = s.gradients();
  double sum_sq = 0.0;
  for (Tensor* g : grads) {
    const float* d = g->data_as<const float>();
    for (int64_t i = 0; i < g->numel(); ++i) sum_sq += static_cast<double>(d[i]) * d[i];
  }
  StepStats stats;
  stats.grad_norm = std::sqrt(sum_sq);
  if (!std::isfinite(stats.grad_norm)) fail("the gradient is not finite at step ", s.step + 1);
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below one.
  float clip = 1.0f;
  if (o.max_grad_norm > 0) {
    const double coef = o.max_grad_norm / (stats.grad_norm + 1e-6);
    if (coef < 1.0) clip = static_cast<float>(coef);
  }
  stats.lr = learning_rate_at(o, s.step);
  ++s.step;
  // torch.optim.AdamW: decoupled decay, then p −= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps).
  const double t = static_cast<double>(s.step);
  const float bias1 = static_cast<float>(1.0 - std::pow(o.beta1, t));
  const float bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o.beta2, t)));
  const float lr = static_cast<float>(stats.lr), decay = static_cast<float>(1.0 - stats.lr * o.weight_decay);
  const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2), eps = static_cast<float>(o.eps);
  const float step_size = lr / bias1;
  for (size_t p = 0; p < params.size(); ++p) {
    float* w = params[p]->data_as<float>();
    float* g = grads[p]->data_as<float>();
    float* m = s.moment1[p].data_as<float>();
    float* v = s.moment2[p].data_as<float>();
    for (int64_t i = 0; i < params[p]->numel(); ++i) {
      const float gi = g[i] * clip;
      w[i] *= decay;
      m[i] = b1 * m[i] + (1.0f - b1) * gi;
      v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
      w[i] -= step_size * m[i] / (std::sqrt(v[i]) / bias2_sqrt + eps);
      g[i] = 0.0f;
    }
  }
  stats.step = s.step;
  return stats;
}

double Trainer::train_step(const TrainBatch& batch, StepStats* stats) {
  const int64_t counted = batch.counted_tokens();
  if (counted == 0) fail("training batch: no position has a label to predict");
  zero_grad();
  const double loss = accumulate_gradients(batch, 1.0 / static_cast<double>(counted)) / static_cast<double>(counted);
  if (!std::isfinite(loss)) fail("the loss is not finite at step ", steps_done() + 1);
  const StepStats result = step();
  if (stats) *stats = result;
  return loss;
}

int64_t Trainer::steps_done() const { return state_->step; }

int64_t Trainer::trainable_parameters() const {
  int64_t total = 0;
  for (Tensor* p : state_->parameters()) total += p->numel();
  return total;
}

const LoraOptions& Trainer::lora_options() const { return state_->lora; }

std::vector<std::string> Trainer::target_modules() const {
  std::vector<std::string> names;
  for (LoraModule m : state_->targets) names.emplace_back(train::kLoraModuleNames[static_cast<size_t>(m)]);
  return names;
}

namespace {

std::string peft_name(int64_t layer, LoraModule m, const char* which) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + train::lora_module_path(m) + ".lora_" +
         which + ".weight";
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> Trainer::adapter_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t l = 0; l < state_->adapters.size(); ++l) {
    for (LoraModule m : state_->targets) {
      const LoraAdapter& a = state_->adapters[l][static_cast<size_t>(m)];
      out.emplace_back(peft_name(static_cast<int64_t>(l), m, "A"), a.A());
      out.emplace_back(peft_name(static_cast<int64_t>(l), m, "B"), a.B());
    }
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Trainer::gradient_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t l = 0; l < state_->adapters.size(); ++l) {
    for (LoraModule m : state_->targets) {
      const LoraAdapter& a = state_->adapters[l][static_cast<size_t>(m)];
      out.emplace_back(peft_name(static_cast<int64_t>(l), m, "A"), a.grad_A());
      out.emplace_back(peft_name(static_cast<int64_t>(l), m, "B"), a.grad_B());
    }
  }
  return out;
}

void Trainer::set_adapter_tensors(const std::map<std::string, Tensor>& tensors, const std::string& source) {
  for (auto& [name, target] : adapter_tensors()) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) fail(source, ": missing adapter tensor \"", name, "\"");
    if (it->second.shape() != target.shape()) {
      fail(source, ": adapter tensor \"", name, "\" has shape ", it->second.shape_string(), ", the model needs ",
           target.shape_string());
    }
    const Tensor values = it->second.to(DType::F32);
    std::memcpy(target.data(), values.data(), target.nbytes());
  }
}

void Trainer::save_adapter(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const {
  PeftLoraConfig config;
  config.r = state_->lora.rank;
  config.lora_alpha = state_->lora.alpha;
  config.lora_dropout = state_->lora.dropout;
  config.target_modules = target_modules();
  config.base_model_name_or_path = base_model_name_or_path;
  save_peft_adapter(dir, config, adapter_tensors());
}

void Trainer::load_adapter(const std::filesystem::path& dir) {
  const PeftAdapter adapter = load_peft_adapter(dir);
  const std::string source = (dir / "adapter_config.json").string();
  if (adapter.config.r != state_->lora.rank) {
    fail(source, ": r is ", adapter.config.r, ", the trainer's rank is ", state_->lora.rank);
  }
  if (adapter.config.lora_alpha != state_->lora.alpha) {
    fail(source, ": lora_alpha is ", adapter.config.lora_alpha, ", the trainer's is ", state_->lora.alpha);
  }
  if (train::parse_lora_targets(adapter.config.target_modules) != state_->targets) {
    std::string theirs, ours;
    for (const std::string& t : adapter.config.target_modules) theirs += (theirs.empty() ? "" : ",") + t;
    for (const std::string& t : target_modules()) ours += (ours.empty() ? "" : ",") + t;
    fail(source, ": target_modules are ", theirs, ", the trainer's are ", ours);
  }
  set_adapter_tensors(adapter.tensors, (dir / "adapter_model.safetensors").string());
}

void Trainer::save_checkpoint(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const {
  save_adapter(dir, base_model_name_or_path);
  std::vector<std::pair<std::string, Tensor>> moments;
  const auto names = adapter_tensors();
  for (size_t i = 0; i < names.size(); ++i) {
    moments.emplace_back(names[i].first + ".exp_avg", state_->moment1[i]);
    moments.emplace_back(names[i].first + ".exp_avg_sq", state_->moment2[i]);
  }
  write_safetensors(dir / "optimizer.safetensors", moments);
  const nlohmann::json j = {{"step", state_->step}, {"forward_calls", state_->forward_calls}};
  write_text_atomically(dir / "trainer_state.json", j.dump(2) + "\n");
}

void Trainer::load_checkpoint(const std::filesystem::path& dir) {
  load_adapter(dir);
  const auto optimizer_path = dir / "optimizer.safetensors";
  const SafetensorsFile file = SafetensorsFile::open(optimizer_path);
  const auto names = adapter_tensors();
  for (size_t i = 0; i < names.size(); ++i) {
    for (auto [suffix, target] : {std::pair{".exp_avg", &state_->moment1[i]}, std::pair{".exp_avg_sq", &state_->moment2[i]}}) {
      const std::string name = names[i].first + suffix;
      if (!file.contains(name)) fail(optimizer_path.string(), ": missing tensor \"", name, "\"");
      const Tensor t = file.tensor(name);
      if (t.dtype() != DType::F32 || t.shape() != target->shape()) {
        fail(optimizer_path.string(), ": tensor \"", name, "\" is ", dtype_name(t.dtype()), " ", t.shape_string(),
             ", expected f32 ", target->shape_string());
      }
      std::memcpy(target->data(), t.data(), t.nbytes());
    }
  }
  const auto state_path = dir / "trainer_state.json";
  std::ifstream in(state_path);
  if (!in) fail(state_path.string(), ": cannot read");
  std::stringstream text;
  text << in.rdbuf();
  try {
    const nlohmann::json j = nlohmann::json::parse(text.str());
    state_->step = j.at("step").get<int64_t>();
    state_->forward_calls = j.at("forward_calls").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(state_path.string(), ": expected {\"step\", \"forward_calls\"} (", e.what(), ")");
  }
  zero_grad();
}

}  // namespace slm
