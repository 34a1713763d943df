// The training step of a Llama-family decoder, with LoRA adapters or with
// every weight trainable: the one decoder's forward over whole sequences,
// keeping what the backward needs (model/decoder.h), its backward from the
// loss down to every trainable tensor, then AdamW, all through the model's
// backend. In LoRA mode the frozen weights are only ever read.
#include <slm/error.h>
#include <slm/random.h>
#include <slm/train.h>

#include "backend/backend.h"
#include "core/atomic_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/decoder.h"
#include "model/modules.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numbers>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace slm {

namespace {

using decoder::Buffer;

size_t sz(int64_t n) { return static_cast<size_t>(n); }

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

struct Trainer::State {
  const Model* model;  // what forward reads: the frozen base, or `master`
  LoraOptions lora;
  OptimizerOptions optimizer;
  std::vector<LoraModule> targets;
  // LoRA: the trained adapter and its gradients, alike in shape.
  Adapter adapter, adapter_grads;
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
  // Forward storage, sized for the last batch shape: the residual stream
  // entering each layer, and the activations of every layer (or, with
  // checkpointing and in evaluation, of the one being run).
  std::vector<Buffer> inputs;
  std::vector<decoder::LayerActivations> layers;
  Buffer x_final, h_final, recomputed, h, act, dh, dx;
  decoder::RopeBuffers rope;
  std::vector<int32_t> positions;
  decoder::BackwardScratch backward;
  std::vector<float> scratch, scores;

  bool full() const { return master.has_value(); }
  decoder::LayerActivations& activations(int64_t layer) {
    return layers.size() == 1 ? layers.front() : layers[sz(layer)];
  }

  // The trained tensors by name (PEFT names for adapters, Hugging Face names
  // for full training), or their gradients in the same order.
  std::vector<std::pair<std::string, Tensor>> named(bool gradients) const;
  std::vector<std::pair<std::string, Tensor>> parameters() const { return named(false); }
  std::vector<std::pair<std::string, Tensor>> gradients() const { return named(true); }

  double run(const TrainBatch& batch, double grad_scale, bool backward);
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
  s.model = &model;
  s.lora = lora;
  s.optimizer = optimizer;
  s.targets = parse_lora_targets(lora.targets, c.fused_projections);
  Rng rng(lora.seed);
  s.adapter = Adapter(c.num_hidden_layers, "trained");
  s.adapter_grads = Adapter(c.num_hidden_layers, "gradients");
  s.grads.layers.resize(sz(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (LoraModule m : s.targets) {
      const auto [in, out] = lora_dims(c, m);
      LoraWeights& w = s.adapter.at(l, m);
      w = lora_init(in, out, lora.rank, lora.alpha, rng);
      s.adapter_grads.at(l, m) = {Tensor::zeros(DType::F32, w.A.shape()), Tensor::zeros(DType::F32, w.B.shape()),
                                  w.scale};
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
  auto state = std::make_unique<State>();
  State& s = *state;
  const ModelConfig& c = model.config();
  s.optimizer = optimizer;
  s.save_dtype = save_dtype;
  Weights master = model.weights();
  Weights grads = model.weights();
  for (auto& [name, t] : named_weights(master, c)) *t = f32_copy(*t);
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
  for (int64_t l = 0; l < adapter.layers(); ++l) {
    for (LoraModule m : targets) {
      const LoraWeights& w = (gradients ? adapter_grads : adapter).at(l, m);
      out.emplace_back(peft_name(l, m, "A"), w.A);
      out.emplace_back(peft_name(l, m, "B"), w.B);
    }
  }
  return out;
}

double Trainer::State::run(const TrainBatch& batch, double grad_scale, bool with_backward) {
  const ModelConfig& c = model->config();
  const Backend& be = model->backend();
  const int64_t B = batch.batch, T = batch.seq, N = B * T, H = c.hidden_size;
  const int64_t layer_count = c.num_hidden_layers;
  if (B <= 0 || T <= 0) fail("training batch: empty (", B, " sequences of ", T, " tokens)");
  if (static_cast<int64_t>(batch.tokens.size()) != N || static_cast<int64_t>(batch.labels.size()) != N) {
    fail("training batch: expected ", N, " tokens and labels, got ", batch.tokens.size(), " and ",
         batch.labels.size());
  }
  for (int32_t id : batch.tokens) {
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
  ++forward_calls;
  // Every layer's activations only when backward reads them without recomputing.
  layers.resize(with_backward && !checkpointing ? sz(layer_count) : 1);
  inputs.resize(sz(layer_count));
  positions.resize(sz(N));
  for (int64_t r = 0; r < N; ++r) positions[sz(r)] = static_cast<int32_t>(r % T);
  const std::vector<int32_t> extents(sz(N), static_cast<int32_t>(T));
  decoder::rope_angles(*model, positions.data(), extents.data(), N, rope);
  // Training's [B, T] batch is one run of rows adding the trained adapter (or none).
  const decoder::AdapterRun rows{0, N, full() ? nullptr : &adapter};
  const decoder::Pass pass{*model, N, rope.tables(), std::span(&rows, 1), nullptr, {}, B, T, with_backward ? lora.dropout : 0.0,
                           mix_seed(lora.seed, forward_calls), h, act, scratch, scores};
  // Next-token targets: position t predicts labels[t+1]; the last position of each sequence predicts nothing.
  std::vector<int32_t> next_tokens(sz(N), -100);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t + 1 < T; ++t) next_tokens[sz(b * T + t)] = batch.labels[sz(b * T + t + 1)];
  }

  inputs[0].resize(sz(N * H));
  decoder::embed(*model, batch.tokens.data(), N, inputs[0].data());
  x_final.resize(sz(N * H));
  for (int64_t l = 0; l < layer_count; ++l) {
    Buffer& out = l + 1 < layer_count ? inputs[sz(l + 1)] : x_final;
    out.resize(sz(N * H));
    decoder::layer_forward(pass, l, inputs[sz(l)].data(), out.data(), activations(l));
  }
  h_final.resize(sz(N * H));
  const Weights& w = model->weights();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const auto softcap = static_cast<float>(c.final_logit_softcapping);
  be.rmsnorm(x_final.data(), w.final_norm.data_as<const float>(), c.norm_offset(), eps, N, H, h_final.data());
  if (!with_backward) {
    return be.cross_entropy(h_final.data(), N, w.lm_head, softcap, next_tokens.data(), 1.0f, nullptr, nullptr);
  }
  const decoder::Gradients g{full() ? &grads : nullptr, full() ? nullptr : &adapter, full() ? nullptr : &adapter_grads};
  dh.resize(sz(N * H));
  const double loss = be.cross_entropy(h_final.data(), N, w.lm_head, softcap, next_tokens.data(),
                                       static_cast<float>(grad_scale), dh.data(),
                                       full() ? grads.lm_head.data_as<float>() : nullptr);
  dx.resize(sz(N * H));
  be.rmsnorm_backward(dh.data(), x_final.data(), w.final_norm.data_as<const float>(), c.norm_offset(), eps, N, H,
                      dx.data(), full() ? grads.final_norm.data_as<float>() : nullptr, false);
  for (int64_t l = layer_count - 1; l >= 0; --l) {
    // The last layer's activations are still those forward left.
    if (checkpointing && l + 1 < layer_count) {
      recomputed.resize(sz(N * H));
      decoder::layer_forward(pass, l, inputs[sz(l)].data(), recomputed.data(), activations(l));
    }
    decoder::layer_backward(pass, l, inputs[sz(l)].data(), activations(l), g, dx, backward);
  }
  if (full()) decoder::embed_backward(*model, dx.data(), batch.tokens.data(), N, grads.embed_tokens.data_as<float>());
  return loss;
}

double Trainer::accumulate_gradients(const TrainBatch& batch, double grad_scale) {
  return state_->run(batch, grad_scale, true);
}

double Trainer::evaluate(const TrainBatch& batch) { return state_->run(batch, 0.0, false); }

void Trainer::zero_grad() {
  for (const auto& [name, g] : state_->gradients()) std::memset(g.data(), 0, g.nbytes());
}

StepStats Trainer::step() {
  State& s = *state_;
  const OptimizerOptions& o = s.optimizer;
  const auto params = s.parameters(), grads = s.gradients();
  double sum_sq = 0.0;
  const Backend& be = s.model->backend();
  for (const auto& [name, g] : grads) sum_sq += be.sum_of_squares(g.data_as<const float>(), g.numel());
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
    be.adamw(param.data_as<float>(), grads[p].second.data_as<float>(), s.moment1[p].data_as<float>(),
             s.moment2[p].data_as<float>(), param.numel(),
             {clip, decay, b1, b2, eps, step_size, bias2_sqrt});
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
  for (LoraModule m : state_->targets) names.emplace_back(kLoraModuleNames[static_cast<size_t>(m)]);
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
  if (parse_lora_targets(adapter.config.target_modules, state_->model->config().fused_projections,
                         source + ": target_modules") != state_->targets) {
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
