// LoRA adapters, as PEFT defines them: beside a frozen linear layer W,
//   y = W x + scale · B (A x),  scale = alpha / r,
// with A [r, in] and B [out, r] in f32. One type serves inference (several
// adapters loaded beside one base, each row of a batch choosing one or none)
// and training (the trained adapter and its gradients are two Adapters of the
// same shape).
#pragma once

#include <slm/tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

// The seven linear layers of a Llama-family block, in PEFT's names.
enum class LoraModule : uint8_t { Q, K, V, O, Gate, Up, Down };
inline constexpr int kLoraModuleCount = 7;
inline constexpr std::array<std::string_view, kLoraModuleCount> kLoraModuleNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// "self_attn.q_proj", "mlp.down_proj": the module's path inside a layer.
std::string lora_module_path(LoraModule module);
// Target names (PEFT module names, or the single entry "all-linear") to the
// set of modules, in canonical order; an unknown name fails naming `source`
// (the option or file field the names came from) and the valid ones.
std::vector<LoraModule> parse_lora_targets(const std::vector<std::string>& names,
                                           std::string_view source = "--lora-targets");

// One module's low-rank pair; empty where the adapter leaves the module alone.
struct LoraWeights {
  Tensor A;  // [rank, in], f32
  Tensor B;  // [out, rank], f32
  float scale = 0.0f;
  bool empty() const { return A.empty(); }
  int64_t rank() const { return A.empty() ? 0 : A.dim(0); }
};

class Rng;

// A fresh pair as PEFT initialises one: A ~ U(±1/√in) (kaiming-uniform with
// a = √5), B = 0, so a new adapter leaves the model unchanged.
LoraWeights lora_init(int64_t in, int64_t out, int64_t rank, double alpha, Rng& rng);

class Adapter {
 public:
  Adapter() : id_(next_id()) {}
  explicit Adapter(int64_t layers, std::string name = {})
      : name_(std::move(name)), id_(next_id()), layers_(static_cast<size_t>(layers)) {}

  // Unique in the process (copies share it, as they share the weights): what
  // tells a KV cache whose keys and values an adapter's requests may reuse.
  uint64_t id() const { return id_; }
  int64_t layers() const { return static_cast<int64_t>(layers_.size()); }
  const std::string& name() const { return name_; }
  LoraWeights& at(int64_t layer, LoraModule m) { return layers_.at(static_cast<size_t>(layer))[static_cast<size_t>(m)]; }
  const LoraWeights& at(int64_t layer, LoraModule m) const {
    return layers_.at(static_cast<size_t>(layer))[static_cast<size_t>(m)];
  }
  // The modules any layer adapts, in canonical order.
  std::vector<LoraModule> modules() const;

 private:
  static uint64_t next_id();
  std::string name_;
  uint64_t id_;
  std::vector<std::array<LoraWeights, kLoraModuleCount>> layers_;
};

}  // namespace slm
