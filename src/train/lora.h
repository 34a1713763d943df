// LoRA adapters beside frozen linear layers, as PEFT defines them:
//   y = W x + scale · B (A dropout(x)),  scale = alpha / r,
// A [r, in] kaiming-uniform(a = √5) and B [out, r] zero at creation, so a new
// adapter leaves the model unchanged. Trainable tensors and their gradients
// are f32 whatever the base weights' dtype.
#pragma once

#include <slm/random.h>
#include <slm/tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slm::train {

// The seven linear layers of a Llama-family block, in PEFT's names.
enum class LoraModule { Q, K, V, O, Gate, Up, Down };
inline constexpr int kLoraModuleCount = 7;
inline constexpr std::array<std::string_view, kLoraModuleCount> kLoraModuleNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// The member of a layer that belongs to module m: its weight in a
// LayerWeights, its update in a LayerAdapter (both name members alike).
template <class Layer>
auto& module_of(Layer& layer, LoraModule m) {
  switch (m) {
    case LoraModule::Q: return layer.q_proj;
    case LoraModule::K: return layer.k_proj;
    case LoraModule::V: return layer.v_proj;
    case LoraModule::O: return layer.o_proj;
    case LoraModule::Gate: return layer.gate_proj;
    case LoraModule::Up: return layer.up_proj;
    case LoraModule::Down: break;
  }
  return layer.down_proj;
}

// The bias slot of module m in a LayerWeights (null for the MLP, which has
// none; an empty tensor where the model has none).
template <class Layer>
auto module_bias(Layer& layer, LoraModule m) -> decltype(&layer.q_bias) {
  switch (m) {
    case LoraModule::Q: return &layer.q_bias;
    case LoraModule::K: return &layer.k_bias;
    case LoraModule::V: return &layer.v_bias;
    case LoraModule::O: return &layer.o_bias;
    default: return nullptr;
  }
}

// "self_attn.q_proj", "mlp.down_proj": the module's path inside a layer.
std::string lora_module_path(LoraModule module);

// Target names (PEFT module names, or the single entry "all-linear") to the
// set of modules, in canonical order; an unknown name fails listing the valid ones.
std::vector<LoraModule> parse_lora_targets(const std::vector<std::string>& names);

class LoraAdapter {
 public:
  LoraAdapter() = default;
  // A fresh adapter initialised as PEFT does (A ~ U(±1/√in), B = 0).
  LoraAdapter(int64_t in, int64_t out, int64_t rank, double alpha, Rng& rng);

  bool active() const { return rank_ > 0; }
  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  int64_t rank() const { return rank_; }
  float scale() const { return scale_; }
  Tensor& A() { return A_; }
  Tensor& B() { return B_; }
  const Tensor& A() const { return A_; }
  const Tensor& B() const { return B_; }
  Tensor& grad_A() { return dA_; }
  Tensor& grad_B() { return dB_; }
  const Tensor& grad_A() const { return dA_; }
  const Tensor& grad_B() const { return dB_; }

  // y[M, out] += scale · B·A·dropout(x); saves u = A·dropout(x) [M, rank].
  // Dropout (probability p, inputs kept scaled by 1/(1−p)) draws its mask
  // from `dropout_seed`, so backward regenerates it instead of storing it.
  void forward(const float* x, int64_t M, double dropout, uint64_t dropout_seed, float* u, float* y,
               std::vector<float>& scratch) const;
  // Accumulates dA and dB from dy [M, out] and adds the adapter's share of
  // ∂L/∂x to dx [M, in]. x, u and the dropout arguments are forward's.
  void backward(const float* x, const float* u, const float* dy, int64_t M, double dropout, uint64_t dropout_seed,
                float* dx, std::vector<float>& scratch);

  void zero_grad();

 private:
  // x with dropout applied, at the start of scratch (or x itself when p = 0).
  const float* dropped_input(const float* x, int64_t M, double dropout, uint64_t seed,
                             std::vector<float>& scratch) const;

  int64_t in_ = 0, out_ = 0, rank_ = 0;
  float scale_ = 0.0f;
  Tensor A_, B_, dA_, dB_;
};

}  // namespace slm::train
