// The training step of a Llama-family decoder, with LoRA adapters or with
// every weight trainable: a forward over whole sequences that keeps what the
// backward needs, the backward from the loss down to every trainable tensor,
// then AdamW. Each block's forward and backward sit side by side in the order
// they run (llm.c style); in LoRA mode the frozen weights are only ever read.
#include <slm/error.h>
#include <slm/train.h>

#include "core/atomic_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "kernels/cpu/backward.h"
#include "kernels/cpu/kernels.h"
#include "model/rope.h"
#include "train/lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numbers>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace slm {

namespace train {
namespace {

using Buffer = std::vector<float>;

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// What one layer's backward needs from its forward, beside the layer's input.
// The normed inputs h1/h2 and the MLP activation are recomputed in backward
// (cheap next to keeping them).
struct LayerActivations {
  Buffer q, k, v;        // after bias, q/k norm and RoPE
  Buffer q_pre, k_pre;   // before the q/k norm (qk_norm models only)
  Buffer attn;           // attention output, o_proj's input [N, q_dim]
  Buffer lse;            // [B, heads, T]
  Buffer x_mid;          // residual stream after attention
  Buffer gate, up;       // MLP pre-activations [N, I]
  std::array<Buffer, kLoraModuleCount> lora_u;  // A·x of each adapter [N, r]
};

std::string peft_name(int64_t layer, LoraModule m, const char* which) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + lora_module_path(m) + ".lora_" + which +
         ".weight";
}

// An f32 copy of t that owns its memory (t itself may view a mapped file).
Tensor f32_copy(const Tensor& t) {
  Tensor out = Tensor::zeros(DType::F32, t.shape());
  const Tensor wide = t.to(DType::F32);
  std::memcpy(out.data(), wide.data(), out.nbytes());
  return out;
}

}  // namespace
}  // namespace train

using train::Buffer;
using train::LoraAdapter;
using train::LoraModule;
using train::sz;

struct Trainer::State {
  const Model* model;  // what forward reads: the frozen base, or `master`
  LoraOptions lora;
  OptimizerOptions optimizer;
  std::vector<LoraModule> targets;
  std::vector<std::array<LoraAdapter, train::kLoraModuleCount>> adapters;  // [layer][module]; inactive if untargeted
  // Full fine-tuning: the trained weights (f32) and their gradients, laid out
  // as the model's (a tied lm_head shares the embedding and its gradient).
  // LoRA leaves them empty (one empty LayerWeights per layer).
  std::optional<Model> master;
  Weights grads;
  DType save_dtype = DType::F32;
  std::vector<Tensor> moment1, moment2;  // AdamW state, parallel to parameters()
  int64_t step = 0;
  uint64_t forward_calls = 0;  // distinguishes the dropout masks of every forward
  bool checkpointing = false;
  std::vector<float> inv_freq;
  // Forward storage, sized for the last batch shape: the residual stream
  // entering each layer, and the activations of every layer (or, with
  // checkpointing and in evaluation, of the one being run).
  std::vector<Buffer> inputs;
  std::vector<train::LayerActivations> layers;
  Buffer x_final, h_final, cos, sin, recomputed;
  // Backward scratch.
  Buffer dx, dh, h, act, dact, dgate, dup, dattn, dq, dk, dv;
  std::vector<float> lora_scratch;

  bool full() const { return master.has_value(); }
  LoraAdapter& adapter(int64_t layer, LoraModule m) { return adapters[sz(layer)][static_cast<size_t>(m)]; }
  train::LayerActivations& activations(int64_t layer) {
    return layers.size() == 1 ? layers.front() : layers[sz(layer)];
  }

  // The trained tensors by name (PEFT names for adapters, Hugging Face names
  // for full training), or their gradients in the same order.
  std::vector<std::pair<std::string, Tensor>> named(bool gradients) const;
  std::vector<std::pair<std::string, Tensor>> parameters() const { return named(false); }
  std::vector<std::pair<std::string, Tensor>> gradients() const { return named(true); }

  uint64_t dropout_seed(int64_t layer, LoraModule m) const {
    return mix_seed(mix_seed(lora.seed, forward_calls), static_cast<uint64_t>(layer * 16 + static_cast<int64_t>(m)));
  }

  double run(const TrainBatch& batch, double grad_scale, bool backward);
  void forward_layer(int64_t l, int64_t B, int64_t T, const float* x, float* x_out, double dropout);
  void backward_layer(int64_t l, int64_t B, int64_t T, double dropout);

  // y = W·x + bias of module m, plus its adapter when it has one.
  void linear(int64_t l, LoraModule m, const float* x, int64_t N, float* y, double dropout) {
    const LayerWeights& L = model->weights().layers[sz(l)];
    const Tensor& W = train::module_of(L, m);
    const Tensor* bias = train::module_bias(L, m);
    cpu::matmul(x, N, W.dim(1), W, bias && !bias->empty() ? bias->data_as<const float>() : nullptr, y);
    LoraAdapter& a = adapter(l, m);
    if (a.active()) {
      Buffer& u = activations(l).lora_u[static_cast<size_t>(m)];
      u.resize(sz(N * a.rank()));
      a.forward(x, N, dropout, dropout_seed(l, m), u.data(), y, lora_scratch);
    }
  }
  // dx (+)= ∂L/∂x of linear(), and the gradients of what it trains.
  void linear_backward(int64_t l, LoraModule m, const float* x, const float* dy, int64_t N, float* grad_x,
                       bool accumulate, double dropout) {
    const Tensor& W = train::module_of(model->weights().layers[sz(l)], m);
    cpu::matmul_backward_input(dy, N, W, grad_x, accumulate);
    if (full()) {
      LayerWeights& G = grads.layers[sz(l)];
      Tensor& dW = train::module_of(G, m);
      cpu::matmul_backward_weight(dy, x, N, dW.dim(0), dW.dim(1), dW.data_as<float>(), true);
      if (Tensor* db = train::module_bias(G, m); db && !db->empty()) {
        cpu::bias_backward(dy, N, db->dim(0), db->data_as<float>());
      }
    }
    LoraAdapter& a = adapter(l, m);
    if (a.active()) {
      a.backward(x, activations(l).lora_u[static_cast<size_t>(m)].data(), dy, N, dropout, dropout_seed(l, m), grad_x,
                 lora_scratch);
    }
  }
  // Where the gradient of a weight accumulates; null when the weights are frozen.
  float* weight_grad(Tensor& g) { return full() ? g.data_as<float>() : nullptr; }
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

namespace {

void check_optimizer(const OptimizerOptions& optimizer) {
  if (!(optimizer.lr > 0) || !std::isfinite(optimizer.lr)) fail("--lr: must be a positive number, got ", optimizer.lr);
  if (optimizer.schedule != LrSchedule::Constant && optimizer.total_steps <= 0) {
    fail("a linear or cosine learning-rate schedule needs the total number of steps");
  }
}

void check_trainable(const Model& model) {
  if (!model.adapter().empty()) {
    fail("the model has a run-time adapter; merge it first (slm merge) to train on top of it");
  }
}

}  // namespace

Trainer::Trainer(std::unique_ptr<State> state) : state_(std::move(state)) {}

Trainer::Trainer(const Model& model, const LoraOptions& lora, const OptimizerOptions& optimizer)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  const ModelConfig& c = model.config();
  if (lora.rank <= 0) fail("--lora-r: rank must be positive, got ", lora.rank);
  if (!(lora.alpha > 0)) fail("--lora-alpha: must be positive, got ", lora.alpha);
  if (!(lora.dropout >= 0 && lora.dropout < 1)) fail("--lora-dropout: must be in [0, 1), got ", lora.dropout);
  check_optimizer(optimizer);
  check_trainable(model);
  s.model = &model;
  s.lora = lora;
  s.optimizer = optimizer;
  s.targets = train::parse_lora_targets(lora.targets);
  s.inv_freq = rope_inverse_frequencies(c);
  Rng rng(lora.seed);
  s.adapters.resize(sz(c.num_hidden_layers));
  s.grads.layers.resize(sz(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (LoraModule m : s.targets) {
      const Tensor& W = train::module_of(model.weights().layers[sz(l)], m);
      s.adapters[sz(l)][static_cast<size_t>(m)] = LoraAdapter(W.dim(1), W.dim(0), lora.rank, lora.alpha, rng);
    }
  }
  for (const auto& [name, p] : s.parameters()) {
    s.moment1.push_back(Tensor::zeros(DType::F32, p.shape()));
    s.moment2.push_back(Tensor::zeros(DType::F32, p.shape()));
  }
}

Trainer Trainer::full(const Model& model, const OptimizerOptions& optimizer, DType save_dtype) {
  if (save_dtype != DType::F32 && save_dtype != DType::F16 && save_dtype != DType::BF16) {
    fail("--save-dtype: expected f32, f16 or bf16, got ", dtype_name(save_dtype));
  }
  check_optimizer(optimizer);
  check_trainable(model);
  auto state = std::make_unique<State>();
  State& s = *state;
  const ModelConfig& c = model.config();
  s.optimizer = optimizer;
  s.save_dtype = save_dtype;
  s.inv_freq = rope_inverse_frequencies(c);
  s.adapters.resize(sz(c.num_hidden_layers));
  Weights master = model.weights();
  Weights grads = model.weights();
  for (auto& [name, t] : named_weights(master, c)) *t = train::f32_copy(*t);
  for (auto& [name, t] : named_weights(grads, c)) *t = Tensor::zeros(DType::F32, t->shape());
  if (c.tie_word_embeddings) {
    master.lm_head = master.embed_tokens;
    grads.lm_head = grads.embed_tokens;
  }
  s.grads = std::move(grads);
  s.master.emplace(c, std::move(master));
  s.model = &*s.master;
  for (const auto& [name, p] : s.parameters()) {
    s.moment1.push_back(Tensor::zeros(DType::F32, p.shape()));
    s.moment2.push_back(Tensor::zeros(DType::F32, p.shape()));
  }
  return Trainer(std::move(state));
}

Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

void Trainer::set_gradient_checkpointing(bool on) { state_->checkpointing = on; }

std::vector<std::pair<std::string, Tensor>> Trainer::State::named(bool gradients) const {
  std::vector<std::pair<std::string, Tensor>> out;
  if (full()) {
    for (const auto& [name, t] : named_weights(gradients ? grads : master->weights(), master->config())) {
      out.emplace_back(name, *t);
    }
    return out;
  }
  for (size_t l = 0; l < adapters.size(); ++l) {
    for (LoraModule m : targets) {
      const LoraAdapter& a = adapters[l][static_cast<size_t>(m)];
      out.emplace_back(train::peft_name(static_cast<int64_t>(l), m, "A"), gradients ? a.grad_A() : a.A());
      out.emplace_back(train::peft_name(static_cast<int64_t>(l), m, "B"), gradients ? a.grad_B() : a.B());
    }
  }
  return out;
}

void Trainer::State::forward_layer(int64_t l, int64_t B, int64_t T, const float* x, float* x_out, double dropout) {
  const ModelConfig& c = model->config();
  const LayerWeights& W = model->weights().layers[sz(l)];
  train::LayerActivations& a = activations(l);
  const int64_t N = B * T, H = c.hidden_size, hd = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd, I = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
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
  linear(l, LoraModule::Q, h.data(), N, a.q.data(), dropout);
  linear(l, LoraModule::K, h.data(), N, a.k.data(), dropout);
  linear(l, LoraModule::V, h.data(), N, a.v.data(), dropout);
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
  linear(l, LoraModule::O, a.attn.data(), N, a.x_mid.data(), dropout);
  cpu::add_inplace(a.x_mid.data(), x, N * H);

  // MLP block.
  cpu::rmsnorm(a.x_mid.data(), W.mlp_norm.data_as<const float>(), eps, N, H, h.data());
  linear(l, LoraModule::Gate, h.data(), N, a.gate.data(), dropout);
  linear(l, LoraModule::Up, h.data(), N, a.up.data(), dropout);
  cpu::silu_mul(a.gate.data(), a.up.data(), act.data(), N * I);
  linear(l, LoraModule::Down, act.data(), N, x_out, dropout);
  cpu::add_inplace(x_out, a.x_mid.data(), N * H);
}

// On entry dx holds ∂L/∂(layer output); on exit ∂L/∂(layer input).
void Trainer::State::backward_layer(int64_t l, int64_t B, int64_t T, double dropout) {
  const ModelConfig& c = model->config();
  const LayerWeights& W = model->weights().layers[sz(l)];
  LayerWeights& G = grads.layers[sz(l)];
  const train::LayerActivations& a = activations(l);
  const float* x_in = inputs[sz(l)].data();
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
  linear_backward(l, LoraModule::Down, act.data(), dx.data(), N, dact.data(), false, dropout);
  cpu::silu_mul_backward(a.gate.data(), a.up.data(), dact.data(), dgate.data(), dup.data(), N * I);
  cpu::rmsnorm(a.x_mid.data(), W.mlp_norm.data_as<const float>(), eps, N, H, h.data());
  linear_backward(l, LoraModule::Gate, h.data(), dgate.data(), N, dh.data(), false, dropout);
  linear_backward(l, LoraModule::Up, h.data(), dup.data(), N, dh.data(), true, dropout);
  cpu::rmsnorm_backward(dh.data(), a.x_mid.data(), W.mlp_norm.data_as<const float>(), eps, N, H, dx.data(),
                        weight_grad(G.mlp_norm), true);

  // Attention block: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1))), h1 = norm(x_in).
  linear_backward(l, LoraModule::O, a.attn.data(), dx.data(), N, dattn.data(), false, dropout);
  const cpu::SequenceAttentionShape shape{B, T, c.num_attention_heads, c.num_key_value_heads, hd, c.layer_window(l)};
  cpu::attention_train_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), dattn.data(), a.lse.data(), shape,
                                dq.data(), dk.data(), dv.data());
  cpu::rope_backward(dq.data(), N, c.num_attention_heads, hd, cos.data(), sin.data());
  cpu::rope_backward(dk.data(), N, c.num_key_value_heads, hd, cos.data(), sin.data());
  if (c.qk_norm) {
    cpu::rmsnorm_backward(dq.data(), a.q_pre.data(), W.q_norm.data_as<const float>(), eps, N * c.num_attention_heads,
                          hd, dq.data(), weight_grad(G.q_norm), false);
    cpu::rmsnorm_backward(dk.data(), a.k_pre.data(), W.k_norm.data_as<const float>(), eps, N * c.num_key_value_heads,
                          hd, dk.data(), weight_grad(G.k_norm), false);
  }
  cpu::rmsnorm(x_in, W.attn_norm.data_as<const float>(), eps, N, H, h.data());
  linear_backward(l, LoraModule::Q, h.data(), dq.data(), N, dh.data(), false, dropout);
  linear_backward(l, LoraModule::K, h.data(), dk.data(), N, dh.data(), true, dropout);
  linear_backward(l, LoraModule::V, h.data(), dv.data(), N, dh.data(), true, dropout);
  cpu::rmsnorm_backward(dh.data(), x_in, W.attn_norm.data_as<const float>(), eps, N, H, dx.data(),
                        weight_grad(G.attn_norm), true);
}

double Trainer::State::run(const TrainBatch& batch, double grad_scale, bool backward) {
  const ModelConfig& c = model->config();
  const int64_t B = batch.batch, T = batch.seq, N = B * T, H = c.hidden_size, half = c.head_dim / 2;
  const int64_t layer_count = c.num_hidden_layers;
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
  // Every layer's activations only when backward reads them without recomputing.
  layers.resize(backward && !checkpointing ? sz(layer_count) : 1);
  inputs.resize(sz(layer_count));
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

  inputs[0].resize(sz(N * H));
  cpu::embedding(model->weights().embed_tokens, batch.tokens.data(), N, inputs[0].data());
  x_final.resize(sz(N * H));
  for (int64_t l = 0; l < layer_count; ++l) {
    Buffer& out = l + 1 < layer_count ? inputs[sz(l + 1)] : x_final;
    out.resize(sz(N * H));
    forward_layer(l, B, T, inputs[sz(l)].data(), out.data(), dropout);
  }
  h_final.resize(sz(N * H));
  const Weights& w = model->weights();
  const float eps = static_cast<float>(c.rms_norm_eps);
  cpu::rmsnorm(x_final.data(), w.final_norm.data_as<const float>(), eps, N, H, h_final.data());
  if (!backward) {
    return cpu::cross_entropy(h_final.data(), N, w.lm_head, next_tokens.data(), 1.0f, nullptr, nullptr);
  }
  dh.resize(sz(N * H));
  const double loss = cpu::cross_entropy(h_final.data(), N, w.lm_head, next_tokens.data(),
                                         static_cast<float>(grad_scale), dh.data(), weight_grad(grads.lm_head));
  dx.resize(sz(N * H));
  cpu::rmsnorm_backward(dh.data(), x_final.data(), w.final_norm.data_as<const float>(), eps, N, H, dx.data(),
                        weight_grad(grads.final_norm), false);
  for (int64_t l = layer_count - 1; l >= 0; --l) {
    // The last layer's activations are still those forward left.
    if (checkpointing && l + 1 < layer_count) {
      recomputed.resize(sz(N * H));
      forward_layer(l, B, T, inputs[sz(l)].data(), recomputed.data(), dropout);
    }
    backward_layer(l, B, T, dropout);
  }
  if (full()) cpu::embedding_backward(dx.data(), batch.tokens.data(), N, H, grads.embed_tokens.data_as<float>());
  return loss;
}

double Trainer::accumulate_gradients(const TrainBatch& batch, double grad_scale) {
  return state_->run(batch, grad_scale, true);
}

double Trainer::evaluate(const TrainBatch& batch) { return state_->run(batch, 0.0, false); }

void Trainer::zero_grad() {
  for (const auto& [name, g] : state_->gradients()) std::memset(g.data(), 0, g.nbytes());
}

namespace {

// Σ x² in double, over fixed blocks summed in order, so the result does not
// depend on how the threads share the work (resumed runs stay bit-identical).
double sum_of_squares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(sz(blocks));
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    double sum = 0.0;
    for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) sum += static_cast<double>(x[i]) * x[i];
    partial[sz(b)] = sum;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

StepStats Trainer::step() {
  State& s = *state_;
  const OptimizerOptions& o = s.optimizer;
  const auto params = s.parameters(), grads = s.gradients();
  double sum_sq = 0.0;
  for (const auto& [name, g] : grads) sum_sq += sum_of_squares(g.data_as<const float>(), g.numel());
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
  const float lr = static_cast<float>(stats.lr);
  const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2), eps = static_cast<float>(o.eps);
  const float step_size = lr / bias1;
  for (size_t p = 0; p < params.size(); ++p) {
    const Tensor& param = params[p].second;
    // Matrices decay; biases and norm weights do not (transformers' Trainer groups them so).
    const float decay = param.rank() == 2 ? static_cast<float>(1.0 - stats.lr * o.weight_decay) : 1.0f;
    float* w = param.data_as<float>();
    float* g = grads[p].second.data_as<float>();
    float* m = s.moment1[p].data_as<float>();
    float* v = s.moment2[p].data_as<float>();
    const int64_t n = param.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
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

bool Trainer::is_full() const { return state_->full(); }

const Model& Trainer::model() const { return *state_->model; }

int64_t Trainer::steps_done() const { return state_->step; }

int64_t Trainer::trainable_parameters() const {
  int64_t total = 0;
  for (const auto& [name, p] : state_->parameters()) total += p.numel();
  return total;
}

const LoraOptions& Trainer::lora_options() const { return state_->lora; }

std::vector<std::string> Trainer::target_modules() const {
  std::vector<std::string> names;
  for (LoraModule m : state_->targets) names.emplace_back(train::kLoraModuleNames[static_cast<size_t>(m)]);
  return names;
}

std::vector<std::pair<std::string, Tensor>> Trainer::parameter_tensors() const { return state_->parameters(); }

std::vector<std::pair<std::string, Tensor>> Trainer::gradient_tensors() const { return state_->gradients(); }

void Trainer::set_parameter_tensors(const std::map<std::string, Tensor>& tensors, const std::string& source) {
  for (auto& [name, target] : parameter_tensors()) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) fail(source, ": missing tensor \"", name, "\"");
    if (it->second.shape() != target.shape()) {
      fail(source, ": tensor \"", name, "\" has shape ", it->second.shape_string(), ", the model needs ",
           target.shape_string());
    }
    const Tensor values = it->second.to(DType::F32);
    std::memcpy(target.data(), values.data(), target.nbytes());
  }
}

void Trainer::save_adapter(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const {
  if (is_full()) fail("save_adapter: a full fine-tuning trainer has no adapter (save_checkpoint writes the model)");
  PeftLoraConfig config;
  config.r = state_->lora.rank;
  config.lora_alpha = state_->lora.alpha;
  config.lora_dropout = state_->lora.dropout;
  config.target_modules = target_modules();
  config.base_model_name_or_path = base_model_name_or_path;
  save_peft_adapter(dir, config, parameter_tensors());
}

void Trainer::load_adapter(const std::filesystem::path& dir) {
  if (is_full()) fail("load_adapter: a full fine-tuning trainer has no adapter");
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
  set_parameter_tensors(adapter.tensors, (dir / "adapter_model.safetensors").string());
}

void Trainer::save_checkpoint(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const {
  const State& s = *state_;
  const auto params = parameter_tensors();
  std::vector<std::pair<std::string, Tensor>> optimizer_state;
  if (is_full()) {
    save_model_folder(*s.master, dir, s.save_dtype, base_model_name_or_path);
    // The folder rounds the weights to its dtype; resuming needs them exact.
    if (s.save_dtype != DType::F32) optimizer_state = params;
  } else {
    save_adapter(dir, base_model_name_or_path);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    optimizer_state.emplace_back(params[i].first + ".exp_avg", s.moment1[i]);
    optimizer_state.emplace_back(params[i].first + ".exp_avg_sq", s.moment2[i]);
  }
  write_safetensors(dir / "optimizer.safetensors", optimizer_state);
  const nlohmann::json j = {{"step", s.step}, {"forward_calls", s.forward_calls}};
  write_text_atomically(dir / "trainer_state.json", j.dump(2) + "\n");
}

void Trainer::load_checkpoint(const std::filesystem::path& dir) {
  State& s = *state_;
  const auto optimizer_path = dir / "optimizer.safetensors";
  const SafetensorsFile file = SafetensorsFile::open(optimizer_path);
  const auto params = parameter_tensors();
  if (is_full()) {
    // The f32 master weights: in optimizer.safetensors when the folder holds another dtype.
    const auto model_path = dir / "model.safetensors";
    std::optional<SafetensorsFile> folder_weights;
    if (!file.contains(params.front().first)) folder_weights = SafetensorsFile::open(model_path);
    const SafetensorsFile& source = folder_weights ? *folder_weights : file;
    std::map<std::string, Tensor> values;
    for (const auto& [name, p] : params) {
      if (source.contains(name)) values[name] = source.tensor(name);
    }
    set_parameter_tensors(values, source.path().string());
  } else {
    load_adapter(dir);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    for (auto [suffix, target] : {std::pair{".exp_avg", &s.moment1[i]}, std::pair{".exp_avg_sq", &s.moment2[i]}}) {
      const std::string name = params[i].first + suffix;
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
    s.step = j.at("step").get<int64_t>();
    s.forward_calls = j.at("forward_calls").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(state_path.string(), ": expected {\"step\", \"forward_calls\"} (", e.what(), ")");
  }
  zero_grad();
}

}  // namespace slm
