#include "model/device_map.h"

#include <slm/error.h>

#include "io/json_fields.h"

#include <charconv>
#include <map>
#include <optional>

namespace slm {

namespace {

std::optional<int> parse_index(std::string_view digits) {
  int value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || value < 0) return std::nullopt;
  return value;
}

DeviceSpec gpu(int index, std::string_view source, std::string_view text, const GpuInventory& gpus) {
  if (gpus.count == 0) fail(source, " ", text, ": no GPU found (", gpus.reason, ")");
  if (index >= gpus.count) {
    fail(source, " ", text, ": this machine has ", gpus.count,
         gpus.count == 1 ? " GPU (cuda:0)" : " GPUs (cuda:0 to cuda:" + std::to_string(gpus.count - 1) + ")");
  }
  return {Device::CUDA, index};
}

// A part's name and where it sits in the placement.
struct Part {
  std::string name;
  DeviceSpec* device;
};

std::vector<Part> parts_of(DevicePlacement& p) {
  std::vector<Part> parts{{"model.embed_tokens", &p.embed}};
  for (size_t i = 0; i < p.layers.size(); ++i) parts.push_back({"model.layers." + std::to_string(i), &p.layers[i]});
  parts.push_back({"model.norm", &p.norm});
  parts.push_back({"lm_head", &p.lm_head});
  return parts;
}

// `key` covers `name` when it is empty, equal, or a prefix ending at a dot.
bool covers(const std::string& key, const std::string& name) {
  return key.empty() || key == name || (name.starts_with(key) && name[key.size()] == '.');
}

DevicePlacement read_device_map(const std::filesystem::path& file, int64_t num_layers, const GpuInventory& gpus) {
  const std::string where = "--device-map " + file.string();
  if (!std::filesystem::is_regular_file(file)) fail(where, ": no such file");
  const nlohmann::json map = read_json(file);
  if (!map.is_object()) fail(where, ": expected a JSON object of module name → device, got ", map.type_name());
  DevicePlacement placement;
  placement.layers.resize(static_cast<size_t>(num_layers));
  std::vector<Part> parts = parts_of(placement);
  std::vector<size_t> decided_by(parts.size(), std::string::npos);  // length of the deciding key + 1
  for (const auto& [key, value] : map.items()) {
    const std::string source = where + ": \"" + key + "\"";
    DeviceSpec device;
    if (value.is_number_integer()) {
      const auto index = value.get<int64_t>();
      if (index < 0) fail(source, ": a GPU number must be 0 or more, got ", index);
      device = gpu(static_cast<int>(index), source, "(GPU " + std::to_string(index) + ")", gpus);
    } else if (value.is_string()) {
      device = parse_device(value.get<std::string>(), source, gpus);
    } else {
      fail(source, ": expected \"cpu\", \"cuda\", \"cuda:N\" or a GPU number, got ", value.dump());
    }
    bool covered_any = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (!covers(key, parts[i].name)) continue;
      covered_any = true;
      if (decided_by[i] == std::string::npos || key.size() + 1 > decided_by[i]) {
        *parts[i].device = device;
        decided_by[i] = key.size() + 1;
      }
    }
    if (!covered_any) {
      fail(source, ": no such part of this model (expected \"\", \"model\", \"model.embed_tokens\", \"model.layers\", "
                   "\"model.layers.K\" with K below ",
           num_layers, ", \"model.norm\" or \"lm_head\")");
    }
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (decided_by[i] == std::string::npos) fail(where, ": no device for \"", parts[i].name, "\"");
  }
  return placement;
}

}  // namespace

std::string DeviceSpec::name() const { return type == Device::CPU ? "cpu" : "cuda:" + std::to_string(index); }

DeviceSpec parse_device(std::string_view text, std::string_view source, const GpuInventory& gpus) {
  if (text == "cpu") return {};
  if (text == "cuda") return gpu(0, source, text, gpus);
  if (text.starts_with("cuda:")) {
    if (const std::optional<int> index = parse_index(text.substr(5))) return gpu(*index, source, text, gpus);
  }
  fail(source, ": unknown device \"", text, "\" (expected cpu, cuda or cuda:N)");
}

bool DevicePlacement::uses(Device type) const {
  if (embed.type == type || norm.type == type || lm_head.type == type) return true;
  for (const DeviceSpec& d : layers) {
    if (d.type == type) return true;
  }
  return false;
}

std::string DevicePlacement::describe() const {
  // Device name → its parts, layer runs written first-last.
  std::map<std::string, std::vector<std::string>> by_device;
  by_device[embed.name()].push_back("model.embed_tokens");
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[i]) ++j;
    by_device[layers[i].name()].push_back(i == j ? "model.layers." + std::to_string(i)
                                                 : "model.layers." + std::to_string(i) + "-" + std::to_string(j));
    i = j + 1;
  }
  by_device[norm.name()].push_back("model.norm");
  by_device[lm_head.name()].push_back("lm_head");
  std::string out;
  for (const auto& [device, names] : by_device) {
    if (!out.empty()) out += "; ";
    out += device + ": ";
    for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  }
  return out;
}

DevicePlacement place_model(const PlacementRequest& request, int64_t num_layers, const GpuInventory& gpus) {
  if (!request.device_map.empty()) {
    if (request.device != "auto") fail("--device ", request.device, " and --device-map: give one of them");
    if (request.gpu_layers >= 0) fail("--gpu-layers and --device-map: give one of them");
    return read_device_map(request.device_map, num_layers, gpus);
  }
  DeviceSpec main;
  if (request.device == "auto") {
    if (gpus.count > 0) main = {Device::CUDA, 0};
  } else {
    main = parse_device(request.device, "--device", gpus);
  }
  if (request.gpu_layers >= 0 && request.device == "cpu") fail("--gpu-layers: --device cpu places no layer on a GPU");
  const int64_t on_gpu = main.type == Device::CPU || request.gpu_layers < 0 ? num_layers
                                                                              : std::min(request.gpu_layers, num_layers);
  DevicePlacement placement;
  placement.embed = on_gpu > 0 ? main : DeviceSpec{};
  for (int64_t i = 0; i < num_layers; ++i) placement.layers.push_back(i < on_gpu ? main : DeviceSpec{});
  placement.norm = placement.lm_head = on_gpu == num_layers ? main : DeviceSpec{};
  return placement;
}

DevicePlacement check_placement(const LoadOptions& options, int64_t num_layers) {
  const GpuInventory gpus = gpu_inventory();
  const PlacementRequest request{options.device, options.gpu_layers, options.device_map};
  const DevicePlacement placement = place_model(request, num_layers, gpus);
  if (!placement.uses(Device::CUDA)) return placement;
  // The CUDA layer finds GPUs and holds their memory, but no Backend runs
  // a model there yet: auto takes the CPU, an explicit GPU is an error.
  if (request.device == "auto" && request.device_map.empty()) {
    return place_model({"cpu", -1, {}}, num_layers, gpus);
  }
  fail(request.device_map.empty() ? "--device " + request.device : "--device-map " + request.device_map.string(),
       ": ", gpus.count, gpus.count == 1 ? " GPU" : " GPUs",
       " found, but this build of slm cannot run a model on a GPU yet (its CUDA kernels are not written); "
       "use --device cpu");
}

}  // namespace slm
