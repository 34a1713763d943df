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

// The linear layers of a block, in PEFT's names: the seven of the Llama
// family, and the fused two of Phi-3's checkpoints (qkv_proj, q/k/v's rows;
// gate_up_proj, gate/up's), which Phi-3 adapts in their place.
enum class LoraModule : uint8_t { Q, K, V, O, Gate, Up, Down, QKV, GateUp };
inline constexpr int kLoraModuleCount = 9;
inline constexpr std::array<std::string_view, kLoraModuleCount> kLoraModuleNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj"};

// "self_attn.q_proj", "mlp.down_proj": the module's path inside a layer.
std::string lora_module_path(LoraModule module);
// The modules a block has: Phi-3's four where the checkpoint fuses its
// projections (qkv_proj, o_proj, gate_up_proj, down_proj), else the seven.
std::vector<LoraModule> linear_modules(bool fused_projections);
// Target names (PEFT module names, or the single entry "all-linear") to the
// set of modules, in canonical order; a name the block lacks fails naming
// `source` (the option or file field the names came from) and the valid ones.
std::vector<LoraModule> parse_lora_targets(const std::vector<std::string>& names, bool fused_projections,
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
