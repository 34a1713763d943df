// --device, --gpu-layers and --device-map into one placement, over a
// pretended inventory of GPUs (the placement logic needs none to run).
#include "model/device_map.h"

#include <slm/error.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

using namespace slm;

namespace {

const GpuInventory kNoGpu{0, "no driver"};
const GpuInventory kTwoGpus{2, ""};
const DeviceSpec kCpu{};
const DeviceSpec kGpu0{Device::CUDA, 0};
const DeviceSpec kGpu1{Device::CUDA, 1};

std::string error_of(const auto& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class DeviceMapFile : public ::testing::Test {
 protected:
  // ctest runs the tests of this file side by side: each has its own file
  void SetUp() override {
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("device_map_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".json");
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path write(const std::string& text) const {
    std::ofstream(path_) << text;
    return path_;
  }
  DevicePlacement place(const std::string& text, const GpuInventory& gpus = kTwoGpus) const {
    PlacementRequest request;
    request.device_map = write(text);
    return place_model(request, 4, gpus);
  }
  std::filesystem::path path_;
};

TEST(ParseDevice, NamesAndNumbers) {
  EXPECT_EQ(parse_device("cpu", "--device", kNoGpu), kCpu);
  EXPECT_EQ(parse_device("cuda", "--device", kTwoGpus), kGpu0);
  EXPECT_EQ(parse_device("cuda:1", "--device", kTwoGpus), kGpu1);
  EXPECT_EQ(kGpu1.name(), "cuda:1");
  EXPECT_EQ(kCpu.name(), "cpu");
}

TEST(ParseDevice, ErrorsNameTheOptionTheDeviceAndWhatExists) {
  EXPECT_EQ(error_of([] { parse_device("cuda", "--device", kNoGpu); }), "--device cuda: no GPU found (no driver)");
  EXPECT_EQ(error_of([] { parse_device("cuda:2", "--device", kTwoGpus); }),
            "--device cuda:2: this machine has 2 GPUs (cuda:0 to cuda:1)");
  EXPECT_EQ(error_of([] { parse_device("cuda:1", "--device", GpuInventory{1, ""}); }),
            "--device cuda:1: this machine has 1 GPU (cuda:0)");
  for (const char* bad : {"tpu", "cuda:", "cuda:-1", "cuda:1x", "CUDA", ""}) {
    EXPECT_EQ(error_of([&] { parse_device(bad, "--device", kTwoGpus); }),
              std::string("--device: unknown device \"") + bad + "\" (expected cpu, cuda or cuda:N)");
  }
}

TEST(PlaceModel, AutoIsTheFirstGpuWhenThereIsOneElseTheCpu) {
  const DevicePlacement cpu = place_model({}, 3, kNoGpu);
  EXPECT_FALSE(cpu.uses(Device::CUDA));
  EXPECT_EQ(cpu.layers.size(), 3u);
  EXPECT_EQ(cpu.describe(), "cpu: model.embed_tokens, model.layers.0-2, model.norm, lm_head");
  const DevicePlacement gpu = place_model({}, 3, kTwoGpus);
  EXPECT_FALSE(gpu.uses(Device::CPU));
  EXPECT_EQ(gpu.describe(), "cuda:0: model.embed_tokens, model.layers.0-2, model.norm, lm_head");
}

TEST(PlaceModel, GpuLayersPutTheEmbeddingAndTheFirstLayersOnTheGpu) {
  const DevicePlacement split = place_model({"cuda:1", 2, {}}, 5, kTwoGpus);
  EXPECT_EQ(split.describe(), "cpu: model.layers.2-4, model.norm, lm_head; cuda:1: model.embed_tokens, model.layers.0-1");
  const DevicePlacement none = place_model({"cuda", 0, {}}, 5, kTwoGpus);
  EXPECT_FALSE(none.uses(Device::CUDA));
  const DevicePlacement all = place_model({"cuda", 9, {}}, 5, kTwoGpus);
  EXPECT_FALSE(all.uses(Device::CPU));
  // auto without a GPU runs on the CPU whatever --gpu-layers says
  EXPECT_FALSE(place_model({"auto", 2, {}}, 5, kNoGpu).uses(Device::CUDA));
  EXPECT_EQ(error_of([] { place_model({"cpu", 2, {}}, 5, kTwoGpus); }),
            "--gpu-layers: --device cpu places no layer on a GPU");
  EXPECT_EQ(error_of([] { place_model({"cuda", 2, {}}, 5, kNoGpu); }), "--device cuda: no GPU found (no driver)");
}

TEST_F(DeviceMapFile, TheLongestCoveringNameDecides) {
  const DevicePlacement p = place(R"({"": "cpu", "model.layers": 1, "model.layers.3": "cuda:0", "lm_head": "cuda"})");
  EXPECT_EQ(p.embed, kCpu);
  EXPECT_EQ(p.layers[0], kGpu1);
  EXPECT_EQ(p.layers[2], kGpu1);
  EXPECT_EQ(p.layers[3], kGpu0);
  EXPECT_EQ(p.norm, kCpu);
  EXPECT_EQ(p.lm_head, kGpu0);
  EXPECT_EQ(p.describe(), "cpu: model.embed_tokens, model.norm; cuda:0: model.layers.3, lm_head; cuda:1: model.layers.0-2");
  // key order in the file does not matter
  EXPECT_EQ(place(R"({"model.layers.3": "cuda:0", "model.layers": 1, "lm_head": "cuda", "": "cpu"})").describe(),
            p.describe());
  // "model" covers everything but lm_head; "model.layers.1" does not cover "model.layers.10"
  const DevicePlacement q = place(R"({"model": "cuda:1", "lm_head": "cpu"})");
  EXPECT_EQ(q.describe(), "cpu: lm_head; cuda:1: model.embed_tokens, model.layers.0-3, model.norm");
}

TEST_F(DeviceMapFile, ErrorsNameTheFileTheKeyAndWhatWasExpected) {
  const std::string file = "--device-map " + write("").string();
  EXPECT_EQ(error_of([&] { place(R"({"model": "cpu"})"); }), file + ": no device for \"lm_head\"");
  EXPECT_EQ(error_of([&] { place(R"({"": "cpu", "model.layers.4": "cpu"})"); }),
            file + ": \"model.layers.4\": no such part of this model (expected \"\", \"model\", \"model.embed_tokens\", "
                   "\"model.layers\", \"model.layers.K\" with K below 4, \"model.norm\" or \"lm_head\")");
  EXPECT_TRUE(error_of([&] { place(R"({"": "cpu", "model.layer": "cpu"})"); })
                  .starts_with(file + ": \"model.layer\": no such part of this model"));
  EXPECT_EQ(error_of([&] { place(R"({"": "disk"})"); }),
            file + ": \"\": unknown device \"disk\" (expected cpu, cuda or cuda:N)");
  EXPECT_EQ(error_of([&] { place(R"({"": true})"); }),
            file + ": \"\": expected \"cpu\", \"cuda\", \"cuda:N\" or a GPU number, got true");
  EXPECT_EQ(error_of([&] { place(R"({"": 2})"); }), file + ": \"\" (GPU 2): this machine has 2 GPUs (cuda:0 to cuda:1)");
  EXPECT_EQ(error_of([&] { place(R"({"": -1})"); }), file + ": \"\": a GPU number must be 0 or more, got -1");
  EXPECT_EQ(error_of([&] { place(R"({"": "cuda"})", kNoGpu); }), file + ": \"\" cuda: no GPU found (no driver)");
  EXPECT_EQ(error_of([&] { place(R"(["cpu"])"); }),
            file + ": expected a JSON object of module name → device, got array");
  EXPECT_NE(error_of([&] { place("{not json"); }).find(path_.string() + ": not valid JSON"), std::string::npos);
}

TEST_F(DeviceMapFile, IsGivenAloneNotWithDeviceOrGpuLayers) {
  PlacementRequest request;
  request.device_map = write(R"({"": "cpu"})");
  request.device = "cpu";
  EXPECT_EQ(error_of([&] { place_model(request, 4, kTwoGpus); }), "--device cpu and --device-map: give one of them");
  request.device = "auto";
  request.gpu_layers = 2;
  EXPECT_EQ(error_of([&] { place_model(request, 4, kTwoGpus); }), "--gpu-layers and --device-map: give one of them");
}

}  // namespace
