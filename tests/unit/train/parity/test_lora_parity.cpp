// Training against the PyTorch reference (tests/reference/lora_reference.py):
// starting from the same adapters (written by the reference in PEFT layout)
// and the same batch, the gradient of every LoRA tensor must agree within
// 1e-4 relative, and a 20-step AdamW run must follow the reference loss curve
// within 1e-3. The full_* fixtures hold full fine-tuning (Trainer::full) to
// the same bounds, for the gradient of every weight of the model. The
// reference runs in float64, so these bound our f32 error.
//
// A bf16 base (llama_bf16) on AVX512-BF16 is held to the reference that
// rounds each base product's input to bf16, forward and backward, as that
// path does (expected_bf16_activations.json), elsewhere to the plain one.
// Against the rounding reference, measured on Zen 5: loss 2e-8, gradients
// 4e-7, curve 2.0e-3: there f32 rounding alone separates the two, until a
// step's ~1e-7 tips an activation across a bf16 rounding step, which moves
// the loss by ~1e-3 (the curve; the first step had none). So the loss is held
// to 5e-4, the gradients to 2e-3 and the curve to 5e-3; against the plain
// reference the same run is 1.7e-3, 2.5e-2 and 8.6e-3 away, and against a
// reference that leaves the backward's dy unrounded the gradients 7.8e-3.
struct Bounds {
  double loss, gradient, curve;
};
constexpr Bounds kF32Bounds{1e-5, 1e-4, 1e-3};
constexpr Bounds kBf16RoundingBounds{5e-4, 2e-3, 5e-3};
#include <slm/model.h>
#include <slm/train.h>

#include "backend/cpu/simd.h"
#include "fixture_list.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kModels[] = {"llama_gqa",      "qwen3_tied",      "qwen2_bias",      "llama_bias",
                               "mistral_window", "full_llama_gqa",  "full_qwen3_tied", "full_qwen2_bias",
                               "full_llama_bias", "gemma3",         "full_gemma3",     "gemma2",
                               "full_gemma2",     "phi3",           "phi3_longrope",   "full_phi3",
                               "llama_bf16"};

class LoraParity : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const char* root = std::getenv("SLM_LORA_PARITY_DIR");
    if (root == nullptr) GTEST_SKIP() << "SLM_LORA_PARITY_DIR is not set (run through ctest)";
    dir_ = fs::path(root) / GetParam();
    ASSERT_TRUE(fs::exists(dir_ / "expected.json")) << dir_ << ": the fixture script did not write expected.json";
    // A bf16 base on a path with bf16 instructions: the reference that rounds as that path does.
    const bool rounds = slm::cpu::bf16_gemm_kernels() != nullptr;
    const fs::path rounded = dir_ / "expected_bf16_activations.json";
    const bool bf16_activations = rounds && fs::exists(rounded);
    bounds_ = bf16_activations ? kBf16RoundingBounds : kF32Bounds;
    std::ifstream in(bf16_activations ? rounded : dir_ / "expected.json");
    expected_ = json::parse(in);
    batch_.batch = expected_["batch"];
    batch_.seq = expected_["seq"];
    batch_.tokens = expected_["tokens"].get<std::vector<int32_t>>();
    batch_.labels = expected_["labels"].get<std::vector<int32_t>>();
    full_ = expected_["mode"] == "full";
    if (!full_) {
      lora_.rank = expected_["rank"];
      lora_.alpha = expected_["alpha"];
      lora_.targets = expected_["targets"].get<std::vector<std::string>>();
    }
    optimizer_.lr = expected_["lr"];
    optimizer_.schedule = slm::parse_lr_schedule(expected_["schedule"]);
    optimizer_.warmup_steps = expected_["warmup_steps"];
    optimizer_.total_steps = expected_["steps"];
    optimizer_.weight_decay = expected_["weight_decay"];
    optimizer_.max_grad_norm = expected_["max_grad_norm"];
  }

  slm::Trainer make_trainer(const slm::Model& model) {
    if (full_) return slm::Trainer::full(model, optimizer_, slm::DType::F32);
    slm::Trainer trainer(model, lora_, optimizer_);
    trainer.load_adapter(dir_ / "adapter");  // written by the reference script, as Python peft lays it out
    return trainer;
  }

  fs::path dir_;
  json expected_;
  bool full_ = false;
  Bounds bounds_ = kF32Bounds;
  slm::TrainBatch batch_;
  slm::LoraOptions lora_;
  slm::OptimizerOptions optimizer_;
};

TEST_P(LoraParity, LossAndGradientsMatchReference) {
  const slm::Model model = slm::Model::load(dir_ / "model");
  slm::Trainer trainer = make_trainer(model);
  const double counted = static_cast<double>(batch_.counted_tokens());
  const double loss = trainer.accumulate_gradients(batch_, 1.0 / counted) / counted;
  EXPECT_NEAR(loss, expected_["loss"].get<double>(), bounds_.loss);
  double worst = 0.0;
  std::string worst_name;
  // Full fine-tuning's gradients under the checkpoint's names (Phi-3's fused ones).
  const auto gradients = slm::checkpoint_tensors(trainer.gradient_tensors(), model.config());
  EXPECT_EQ(gradients.size(), expected_["grads"].size()) << "every trainable tensor has a reference gradient";
  for (const auto& [name, grad] : gradients) {
    ASSERT_TRUE(expected_["grads"].contains(name)) << name;
    const std::vector<double> want = expected_["grads"][name].get<std::vector<double>>();
    ASSERT_EQ(static_cast<int64_t>(want.size()), grad.numel()) << name;
    double error = 0.0, scale = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      error = std::max(error, std::fabs(grad.data_as<const float>()[i] - want[i]));
      scale = std::max(scale, std::fabs(want[i]));
    }
    ASSERT_GT(scale, 0.0) << name << ": the reference gradient is zero, so it checks nothing";
    if (error / scale > worst) {
      worst = error / scale;
      worst_name = name;
    }
  }
  RecordProperty("max_relative_gradient_error", std::to_string(worst));
  std::printf("%s: loss %.8f (reference %.8f), max relative gradient error %.3g (%s)\n", GetParam(), loss,
              expected_["loss"].get<double>(), worst, worst_name.c_str());
  EXPECT_LT(worst, bounds_.gradient) << worst_name;
}

TEST_P(LoraParity, LossCurveFollowsReference) {
  const slm::Model model = slm::Model::load(dir_ / "model");
  slm::Trainer trainer = make_trainer(model);
  const std::vector<double> curve = expected_["curve"].get<std::vector<double>>();
  double worst = 0.0;
  for (size_t step = 0; step < curve.size(); ++step) {
    const double loss = trainer.train_step(batch_);
    worst = std::max(worst, std::fabs(loss - curve[step]));
    EXPECT_NEAR(loss, curve[step], bounds_.curve) << "step " << step;
  }
  std::printf("%s: %zu steps, loss %.4f -> %.4f, max deviation from the reference curve %.3g\n", GetParam(),
              curve.size(), curve.front(), curve.back(), worst);
  EXPECT_LT(curve.back(), curve.front() - 0.1) << "the reference run should learn something";
}

TEST(LoraParityFixtures, ModelListIsTheScripts) { slm::test::expect_fixture_list("SLM_LORA_PARITY_DIR", kModels); }

INSTANTIATE_TEST_SUITE_P(Models, LoraParity, ::testing::ValuesIn(kModels));

}  // namespace
