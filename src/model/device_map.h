// Where each part of a model runs: --device, --gpu-layers and --device-map
// (the dictionary form transformers takes) made into one placement, checked
// against the GPUs this build and machine offer.
#pragma once

#include <slm/model.h>
#include <slm/tensor.h>

#include "backend/backend.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

struct DeviceSpec {
  Device type = Device::CPU;
  int index = 0;  // the GPU's number (cuda:N)
  std::string name() const;  // "cpu", "cuda:0"
  bool operator==(const DeviceSpec&) const = default;
};

// "cpu", "cuda" (= cuda:0) or "cuda:N", checked against `gpus`; `source`
// names where the text came from in errors ("--device", "map.json: \"lm_head\"").
DeviceSpec parse_device(std::string_view text, std::string_view source, const GpuInventory& gpus);

// The device of every part, in the order activations flow through them.
struct DevicePlacement {
  DeviceSpec embed;
  std::vector<DeviceSpec> layers;
  DeviceSpec norm;
  DeviceSpec lm_head;

  bool uses(Device type) const;
  // The parts that run on each device, as transformers names them:
  // "cpu: model.embed_tokens, model.layers.0-11, model.norm, lm_head".
  std::string describe() const;
};

struct PlacementRequest {
  std::string device = "auto";           // auto, cpu, cuda, cuda:N
  int64_t gpu_layers = -1;               // the first N layers on the GPU (-1: all)
  std::filesystem::path device_map;      // a JSON file; empty: none
};

// auto is the first GPU when there is one, else the CPU. With --gpu-layers N
// on a GPU the embedding and the first N layers run there, the rest on the
// CPU; the final norm and lm_head follow the last layer. A device map names
// devices by transformers' module names: "" (everything), "model",
// "model.embed_tokens", "model.layers", "model.layers.K", "model.norm",
// "lm_head"; the longest name covering a part decides. Values are "cpu",
// "cuda", "cuda:N" or N (a GPU's number).
DevicePlacement place_model(const PlacementRequest& request, int64_t num_layers, const GpuInventory& gpus);

// Where `options` place a model of `num_layers` layers on this machine; fails
// naming the option when it asks for a device this build or machine lacks.
// No part runs on a GPU yet: auto is the CPU, and a GPU asked for by name is
// an error that says so.
DevicePlacement check_placement(const LoadOptions& options, int64_t num_layers);

}  // namespace slm
