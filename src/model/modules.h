// The linear layers a LoRA module names, inside a layer's weights.
#pragma once

#include <slm/adapter.h>
#include <slm/model.h>

namespace slm {

// The weight of module m in a LayerWeights.
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

}  // namespace slm
