// The linear layers a LoRA module names, inside a layer's weights.
#pragma once

#include <slm/adapter.h>
#include <slm/error.h>
#include <slm/model.h>

#include <utility>
#include <vector>

namespace slm {

// The weight of module m in a LayerWeights (a fused module has none of its
// own: its parts are fused_parts(m)).
template <class Layer>
auto& module_of(Layer& layer, LoraModule m) {
  switch (m) {
    case LoraModule::Q: return layer.q_proj;
    case LoraModule::K: return layer.k_proj;
    case LoraModule::V: return layer.v_proj;
    case LoraModule::O: return layer.o_proj;
    case LoraModule::Gate: return layer.gate_proj;
    case LoraModule::Up: return layer.up_proj;
    case LoraModule::Down: return layer.down_proj;
    case LoraModule::QKV:
    case LoraModule::GateUp: break;
  }
  fail("module_of: ", kLoraModuleNames[static_cast<size_t>(m)], " is fused from several matrices");
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

// The modules whose rows a fused module holds, in order (empty for the others).
inline std::vector<LoraModule> fused_parts(LoraModule m) {
  if (m == LoraModule::QKV) return {LoraModule::Q, LoraModule::K, LoraModule::V};
  if (m == LoraModule::GateUp) return {LoraModule::Gate, LoraModule::Up};
  return {};
}

// What module m's pair adds to each matrix: to its own, or for a fused
// module to each part, with that part's rows of B (views, A shared).
inline std::vector<std::pair<LoraModule, LoraWeights>> lora_parts(const ModelConfig& c, LoraModule m,
                                                                  const LoraWeights& w) {
  const std::vector<LoraModule> parts = fused_parts(m);
  if (parts.empty()) return {{m, w}};
  std::vector<std::pair<LoraModule, LoraWeights>> out;
  int64_t row = 0;
  for (LoraModule part : parts) {
    const int64_t rows = lora_dims(c, part).second;
    out.push_back({part, LoraWeights{w.A, w.B.rows(row, rows), w.scale}});
    row += rows;
  }
  return out;
}

}  // namespace slm
