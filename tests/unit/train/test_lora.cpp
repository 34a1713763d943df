// LoRA adapters, the learning-rate schedules and the Trainer's whole-model
// gradient with adapters, each against a direct computation or finite
// differences; merged and run-time adapters against the trainer's forward.
#include "backend/backend.h"
#include "trainer_fixture.h"
#include "../kernels/kernel_test_util.h"

#include <slm/error.h>
#include <slm/model.h>
#include <slm/random.h>
#include <slm/train.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <numbers>
#include <vector>

namespace {

using slm::LoraModule;
using slm::LoraWeights;

const slm::Backend& cpu() { return slm::backend_for(slm::Device::CPU); }

void forward(const LoraWeights& w, const float* x, int64_t M, double p, uint64_t seed, float* u, float* y,
             std::vector<float>& scratch) {
  cpu().lora_forward(x, M, w, {p, seed}, u, y, scratch);
}

using slm::test::random_vector;

TEST(LoraTargets, ParsesNamesAndAllLinear) {
  EXPECT_EQ(slm::parse_lora_targets({"v_proj", "q_proj"}, false),
            (std::vector<LoraModule>{LoraModule::Q, LoraModule::V}));
  EXPECT_EQ(slm::parse_lora_targets({"all-linear"}, false).size(), 7u);
  EXPECT_EQ(slm::lora_module_path(LoraModule::Down), "mlp.down_proj");
  try {
    slm::parse_lora_targets({"qkv_proj"}, false);
    FAIL() << "accepted a module the block lacks";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("qkv_proj"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("gate_proj"), std::string::npos);  // lists the valid names
  }
}

TEST(LoraTargets, FusedBlocksHaveTheirOwnFour) {
  EXPECT_EQ(slm::parse_lora_targets({"all-linear"}, true),
            (std::vector<LoraModule>{LoraModule::O, LoraModule::Down, LoraModule::QKV, LoraModule::GateUp}));
  EXPECT_EQ(slm::lora_module_path(LoraModule::QKV), "self_attn.qkv_proj");
  EXPECT_EQ(slm::lora_module_path(LoraModule::GateUp), "mlp.gate_up_proj");
  try {
    slm::parse_lora_targets({"q_proj"}, true);
    FAIL() << "accepted q_proj on a block that fuses it";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("qkv_proj"), std::string::npos) << e.what();
  }
}

TEST(LoraWeights, InitialisesAsPeft) {
  slm::Rng rng(1);
  const LoraWeights a = slm::lora_init(100, 30, 8, 16.0, rng);
  EXPECT_FLOAT_EQ(a.scale, 2.0f);
  double max_abs = 0, sum = 0;
  for (int64_t i = 0; i < a.A.numel(); ++i) {
    max_abs = std::max(max_abs, std::fabs(double(a.A.at(i))));
    sum += a.A.at(i);
  }
  EXPECT_LE(max_abs, 0.1);  // U(±1/√in)
  EXPECT_GT(max_abs, 0.09);
  EXPECT_LT(std::fabs(sum / 800), 0.01);
  for (int64_t i = 0; i < a.B.numel(); ++i) ASSERT_EQ(a.B.at(i), 0.0f);
  // B = 0: the adapter adds nothing.
  const auto x = random_vector(3 * 100, 2);
  std::vector<float> y(90, 1.5f), u(24), scratch;
  forward(a, x.data(), 3, 0.0, 0, u.data(), y.data(), scratch);
  for (float v : y) ASSERT_EQ(v, 1.5f);
}

// With A all ones, B = 1 and scale 1, y of a row of ones counts the inputs
// dropout kept, times 1/(1−p): the share kept is 1−p, rows differ, and the
// same seed draws the same mask again.
TEST(LoraWeights, DropoutKeepsOneMinusPAndScalesByItsInverse) {
  const int64_t M = 50, in = 1000;
  slm::Rng rng(1);
  LoraWeights a = slm::lora_init(in, 1, 1, 1.0, rng);
  std::fill_n(a.A.data_as<float>(), in, 1.0f);
  a.B.data_as<float>()[0] = 1.0f;
  const std::vector<float> x(static_cast<size_t>(M * in), 1.0f);
  for (double p : {0.05, 0.5}) {
    std::vector<float> y(M, 0.0f), again(M, 0.0f), u(M), scratch;
    forward(a, x.data(), M, p, 7, u.data(), y.data(), scratch);
    forward(a, x.data(), M, p, 7, u.data(), again.data(), scratch);
    double kept = 0;
    for (int64_t r = 0; r < M; ++r) kept += y[size_t(r)] * (1.0 - p) / in;
    EXPECT_NEAR(kept / M, 1.0 - p, 0.01) << "p " << p;
    EXPECT_NE(y[0], y[1]) << "every row draws its own mask";
    EXPECT_EQ(y, again) << "the seed decides the mask";
  }
}

// L = Σ c·y is linear in each single entry of A, B or x, so a central
// difference is exact up to rounding.
TEST(LoraWeights, BackwardMatchesFiniteDifferencesWithDropout) {
  for (double dropout : {0.0, 0.3}) {
    SCOPED_TRACE("dropout " + std::to_string(dropout));
    const int64_t M = 5, in = 13, out = 7, rank = 3;
    slm::Rng rng(3);
    LoraWeights a = slm::lora_init(in, out, rank, 6.0, rng);
    LoraWeights gradient{slm::Tensor::zeros(slm::DType::F32, a.A.shape()), slm::Tensor::zeros(slm::DType::F32, a.B.shape()),
                     a.scale};
    const auto b = random_vector(out * rank, 4);
    std::copy(b.begin(), b.end(), a.B.data_as<float>());
    auto x = random_vector(M * in, 5);
    const auto c = random_vector(M * out, 6);
    std::vector<float> scratch, u(static_cast<size_t>(M * rank));
    auto loss = [&] {
      std::vector<float> y(static_cast<size_t>(M * out), 0.0f), uu(u.size());
      forward(a, x.data(), M, dropout, 42, uu.data(), y.data(), scratch);
      double s = 0;
      for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * c[i];
      return s;
    };
    std::vector<float> y(static_cast<size_t>(M * out), 0.0f), dx(static_cast<size_t>(M * in), 0.0f);
    forward(a, x.data(), M, dropout, 42, u.data(), y.data(), scratch);
    cpu().lora_backward(x.data(), u.data(), c.data(), M, a, {dropout, 42}, gradient, dx.data(), scratch);
    auto check = [&](float* values, const float* grad, int64_t n, const char* what) {
      for (int64_t i = 0; i < n; ++i) {
        const float saved = values[i];
        values[i] = saved + 0.5f;
        const double up = loss();
        values[i] = saved - 0.5f;
        const double down = loss();
        values[i] = saved;
        ASSERT_NEAR(grad[i], (up - down), 1e-4 * (1 + std::fabs(up - down))) << what << " " << i;
      }
    };
    check(a.A.data_as<float>(), gradient.A.data_as<const float>(), a.A.numel(), "A");
    check(a.B.data_as<float>(), gradient.B.data_as<const float>(), a.B.numel(), "B");
    check(x.data(), dx.data(), M * in, "x");
  }
}

TEST(LearningRate, SchedulesMatchTransformers) {
  slm::OptimizerOptions o;
  o.lr = 1.0;
  o.warmup_steps = 4;
  o.total_steps = 14;
  o.schedule = slm::LrSchedule::Constant;
  EXPECT_DOUBLE_EQ(slm::learning_rate_at(o, 0), 0.0);
  EXPECT_DOUBLE_EQ(slm::learning_rate_at(o, 2), 0.5);
  EXPECT_DOUBLE_EQ(slm::learning_rate_at(o, 9), 1.0);
  o.schedule = slm::LrSchedule::Linear;
  EXPECT_DOUBLE_EQ(slm::learning_rate_at(o, 4), 1.0);
  EXPECT_DOUBLE_EQ(slm::learning_rate_at(o, 9), 0.5);
  EXPECT_DOUBLE_EQ(slm::learning_rate_at(o, 20), 0.0);
  o.schedule = slm::LrSchedule::Cosine;
  EXPECT_NEAR(slm::learning_rate_at(o, 9), 0.5, 1e-12);
  EXPECT_NEAR(slm::learning_rate_at(o, 6), 0.5 * (1 + std::cos(std::numbers::pi * 0.2)), 1e-12);
  EXPECT_THROW(slm::parse_lr_schedule("step"), slm::Error);
}

// The gradient along a random direction against a central difference of the
// f32 loss: loose (f32 noise), but catches any wiring mistake in the backward.
// Full fine-tuning (every weight) goes through the same check.
TEST_F(TrainerTest, DirectionalDerivativeMatchesFiniteDifference) {
  for (const bool full : {false, true}) {
    for (const char* arch : {"llama", "qwen3", "qwen2"}) {
      SCOPED_TRACE(std::string(arch) + (full ? " full" : " lora"));
      const slm::Model model = tiny_model(arch);
      slm::LoraOptions lora;
      lora.rank = 3;
      lora.targets = {"all-linear"};
      slm::Trainer trainer = full ? slm::Trainer::full(model, {}, slm::DType::F32) : slm::Trainer(model, lora, {});
      std::vector<std::vector<float>> direction;
      slm::Rng rng(5);
      for (auto& [name, t] : trainer.parameter_tensors()) {
        std::vector<float> d(static_cast<size_t>(t.numel()));
        for (int64_t i = 0; i < t.numel(); ++i) {
          d[size_t(i)] = static_cast<float>(rng.normal());
          if (name.find("lora_B") != std::string::npos) t.data_as<float>()[i] = static_cast<float>(rng.normal() * 0.1);
        }
        direction.push_back(std::move(d));
      }
      const slm::TrainBatch b = batch();
      trainer.zero_grad();
      trainer.accumulate_gradients(b, 1.0);
      double analytic = 0;
      size_t k = 0;
      for (auto& [name, g] : trainer.gradient_tensors()) {
        for (int64_t i = 0; i < g.numel(); ++i) analytic += double(g.data_as<float>()[i]) * direction[k][size_t(i)];
        ++k;
      }
      auto shifted_loss = [&](double h) {
        size_t j = 0;
        for (auto& [name, t] : trainer.parameter_tensors()) {
          float* values = t.data_as<float>();
          for (int64_t i = 0; i < t.numel(); ++i) values[i] += static_cast<float>(h) * direction[j][size_t(i)];
          ++j;
        }
        const double value = trainer.evaluate(b);
        j = 0;
        for (auto& [name, t] : trainer.parameter_tensors()) {
          float* values = t.data_as<float>();
          for (int64_t i = 0; i < t.numel(); ++i) values[i] -= static_cast<float>(h) * direction[j][size_t(i)];
          ++j;
        }
        return value;
      };
      const double h = 1e-4;
      const double numeric = (shifted_loss(h) - shifted_loss(-h)) / (2 * h);
      EXPECT_NEAR(analytic, numeric, 1e-3 * std::fabs(numeric) + 1e-3)
          << "analytic " << analytic << " numeric " << numeric;
    }
  }
}

// The final norm bounds the hidden state, so the frozen head's weights bound
// how peaked a prediction can get: larger weights let the loss approach zero.
// At lr 1e-2 the curve falls smoothly (0.0064 by step 50, 0.0025 at 150, the
// same on every instruction-set path); at 3e-2 it spiked past 1 late in the
// run and its last value hung on the rounding of the path.
TEST_F(TrainerTest, OverfitsASmallBatch) {
  const slm::Model model = tiny_model("llama", 0.6);
  slm::LoraOptions lora;
  lora.rank = 8;
  lora.targets = {"all-linear"};
  slm::OptimizerOptions opt;
  opt.lr = 1e-2;
  slm::Trainer trainer(model, lora, opt);
  EXPECT_EQ(trainer.trainable_parameters(), 2 * (8 * (24 + 24) + 8 * (24 + 12) * 2 + 8 * (24 + 24) +
                                                 8 * (24 + 40) * 3));
  const slm::TrainBatch b = batch();
  double first = 0, last = 0, worst_late = 0;
  for (int step = 0; step < 150; ++step) {
    last = trainer.train_step(b);
    if (step == 0) first = last;
    if (step >= 50) worst_late = std::max(worst_late, last);
  }
  EXPECT_GT(first, 3.0);
  EXPECT_LT(last, 0.005);
  EXPECT_LT(worst_late, 0.01) << "the loss rose again after step 50";
  EXPECT_EQ(trainer.steps_done(), 150);
}

// Frozen weights stay in their own dtype: a bf16 base trains through the same
// code, its gradients those of the f32 model up to bf16 rounding of the weights.
TEST_F(TrainerTest, Bf16BaseWeightsGiveNearlyTheF32Gradients) {
  const slm::Model f32 = tiny_model("llama");
  slm::LoadOptions load;
  load.dtype = slm::DType::BF16;
  const slm::Model bf16 = tiny_model("llama", 0.2, load);
  ASSERT_EQ(bf16.dtype(), slm::DType::BF16);
  slm::LoraOptions lora;
  lora.rank = 4;
  lora.targets = {"all-linear"};
  slm::Trainer a(f32, lora, {}), b(bf16, lora, {});
  for (slm::Trainer* t : {&a, &b}) {
    for (auto& [name, tensor] : t->parameter_tensors()) {
      if (name.find("lora_B") == std::string::npos) continue;
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.data_as<float>()[i] = 0.05f * static_cast<float>(i % 5 - 2);
    }
  }
  const slm::TrainBatch data = batch();
  const double loss_a = a.accumulate_gradients(data, 1.0), loss_b = b.accumulate_gradients(data, 1.0);
  EXPECT_NEAR(loss_a, loss_b, 1e-2 * std::fabs(loss_a));
  const auto ga = a.gradient_tensors(), gb = b.gradient_tensors();
  double diff = 0, norm = 0;
  for (size_t t = 0; t < ga.size(); ++t) {
    for (int64_t i = 0; i < ga[t].second.numel(); ++i) {
      const double x = ga[t].second.data_as<float>()[i], y = gb[t].second.data_as<float>()[i];
      diff += (x - y) * (x - y);
      norm += x * x;
    }
  }
  EXPECT_LT(std::sqrt(diff / norm), 5e-2);
}

// The merged model, run by the inference forward, predicts exactly what the
// base plus adapter predicts in the trainer.
TEST_F(TrainerTest, MergedModelMatchesBasePlusAdapter) {
  const slm::Model base = tiny_model("qwen2");
  slm::LoraOptions lora;
  lora.rank = 4;
  lora.alpha = 12;
  lora.targets = {"q_proj", "o_proj", "up_proj", "down_proj"};
  slm::Trainer trainer(base, lora, {});
  for (auto& [name, tensor] : trainer.parameter_tensors()) {
    if (name.find("lora_B") == std::string::npos) continue;
    for (int64_t i = 0; i < tensor.numel(); ++i) tensor.data_as<float>()[i] = 0.1f * static_cast<float>(i % 7 - 3);
  }
  const auto dir = std::filesystem::path(SLM_BINARY_DIR) / "tests" / "train_tiny" / "merge_adapter";
  trainer.save_adapter(dir, "tiny");
  slm::Model merged = slm::merge_adapter(base, dir);
  const slm::TrainBatch b = batch();
  const double want = trainer.evaluate(b);
  const double got = forward_loss(merged, b);
  EXPECT_NEAR(got, want, 1e-4 * std::fabs(want));
  const double base_loss = slm::Trainer(base, lora, {}).evaluate(b);  // fresh adapters: B = 0
  EXPECT_GT(std::fabs(base_loss - want), 1e-2) << "the adapter should change the predictions";

  // An adapter made for another shape is refused, naming the tensor.
  slm::LoraOptions wider = lora;
  wider.rank = 6;
  slm::Trainer other(base, wider, {});
  other.save_adapter(dir, "tiny");
  std::filesystem::path config = dir / "adapter_config.json";
  std::string text;
  {
    std::ifstream in(config);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto at = text.find("\"r\": 6");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 6, "\"r\": 4");
  std::ofstream(config) << text;
  try {
    slm::merge_adapter(base, dir);
    FAIL() << "merged an adapter of the wrong shape";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lora_A.weight\" has shape [6, 24]"), std::string::npos) << e.what();
  }
}

// PEFT's target_modules may be one regular expression over the modules'
// whole names: it selects the same modules as the list it stands for, and an
// expression that selects other modules than the file holds, none, or is no
// expression at all is refused naming the file and the field.
TEST_F(TrainerTest, TargetModulesAsARegularExpression) {
  const slm::Model base = tiny_model("llama");
  slm::LoraOptions lora;
  lora.rank = 4;
  lora.targets = {"q_proj", "v_proj"};
  slm::Trainer trainer(base, lora, {});
  for (auto& [name, tensor] : trainer.parameter_tensors()) {
    if (name.find("lora_B") == std::string::npos) continue;
    for (int64_t i = 0; i < tensor.numel(); ++i) tensor.data_as<float>()[i] = 0.05f * static_cast<float>(i % 5 - 2);
  }
  const auto dir = work_dir() / "regex_adapter";
  trainer.save_adapter(dir, "tiny");
  const slm::Adapter listed = slm::load_adapter(base, dir);
  const auto rewrite = [&](const std::string& targets) {
    std::ifstream in(dir / "adapter_config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    config["target_modules"] = targets;
    std::ofstream(dir / "adapter_config.json") << config.dump();
  };
  rewrite(R"(.*\.(q_proj|v_proj))");
  const slm::Adapter matched = slm::load_adapter(base, dir);
  EXPECT_EQ(matched.modules(), (std::vector<slm::LoraModule>{slm::LoraModule::Q, slm::LoraModule::V}));
  for (int64_t l = 0; l < matched.layers(); ++l) {
    for (slm::LoraModule m : {slm::LoraModule::Q, slm::LoraModule::V}) {
      const slm::Tensor& a = matched.at(l, m).B;
      const slm::Tensor& b = listed.at(l, m).B;
      ASSERT_EQ(a.numel(), b.numel());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << "layer " << l;
    }
  }
  for (const auto& [pattern, message] : std::vector<std::pair<std::string, std::string>>{
           {R"(model\.layers\.0\.self_attn\.(q_proj|v_proj))", "account for"},
           {"nothing", "matches no module"},
           {"(", "neither a module name nor a regular expression"}}) {
    rewrite(pattern);
    try {
      slm::load_adapter(base, dir);
      ADD_FAILURE() << "accepted " << pattern;
    } catch (const slm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("adapter"), std::string::npos) << e.what();
    }
  }
}

// An adapter applied at run time gives the merged model's logits, over a
// whole sequence (prefill) and token by token (decode), without changing the
// base weights (Phi-3's are views of its fused tensors). A bad folder fails
// naming the file.
TEST_F(TrainerTest, RuntimeAdapterMatchesMergedModel) {
  for (const char* arch : {"llama", "qwen2", "qwen3", "phi3"}) {  // phi3: LoRA on the fused qkv_proj, gate_up_proj
    SCOPED_TRACE(arch);
    const slm::Model base = tiny_model(arch);
    slm::LoraOptions lora;
    lora.rank = 4;
    lora.alpha = 12;
    lora.targets = {"all-linear"};
    slm::Trainer trainer(base, lora, {});
    for (auto& [name, tensor] : trainer.parameter_tensors()) {
      if (name.find("lora_B") == std::string::npos) continue;
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.data_as<float>()[i] = 0.1f * static_cast<float>(i % 7 - 3);
    }
    const auto dir = work_dir() / "runtime_adapter";
    trainer.save_adapter(dir, "tiny");
    slm::Model merged = slm::merge_adapter(base, dir);
    const slm::Model adapted = tiny_model(arch);
    const slm::Adapter adapter = slm::load_adapter(adapted, dir);
    const slm::TrainBatch b = batch();
    const std::vector<float> want = forward_logits(merged, b), got = forward_logits(adapted, b, &adapter);
    double error = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      error = std::max(error, double(std::fabs(got[i] - want[i])));
      scale = std::max(scale, double(std::fabs(want[i])));
    }
    EXPECT_LT(error / scale, 1e-5);
    // Decode: one token at a time through the KV cache.
    slm::KVCache cache(adapted.config(), b.seq);
    const int64_t V = adapted.config().vocab_size;
    for (int64_t t = 0; t < b.seq; ++t) {
      const auto row = adapted.forward_last_logits(std::span<const int32_t>(&b.tokens[size_t(t)], 1), cache, &adapter);
      for (int64_t c = 0; c < V; ++c) ASSERT_NEAR(row[size_t(c)], want[size_t(t * V + c)], 1e-5 * scale) << t;
    }
    const double trained = trainer.evaluate(b);
    EXPECT_NEAR(forward_loss(adapted, b, &adapter), trained, 1e-4 * std::fabs(trained));
    const slm::Model fresh = tiny_model(arch);
    const slm::Tensor& q = adapted.weights().layers[0].q_proj;
    EXPECT_EQ(std::memcmp(q.data(), fresh.weights().layers[0].q_proj.data(), q.nbytes()), 0);
  }

  const slm::Model model = tiny_model("llama");
  const auto missing = work_dir() / "no_adapter_here";
  try {
    slm::load_adapter(model, missing);
    FAIL() << "loaded a missing adapter";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find((missing / "adapter_config.json").string()), std::string::npos) << e.what();
  }
}

// Stop after three steps, checkpoint, resume in a fresh trainer: the result is
// bit-identical to six uninterrupted steps (dropout on, so the masks' counter
// must survive too).
TEST_F(TrainerTest, ResumeFromCheckpointEqualsUninterrupted) {
  const slm::Model model = tiny_model("llama");
  slm::LoraOptions lora;
  lora.rank = 4;
  lora.dropout = 0.1;
  lora.seed = 9;
  lora.targets = {"all-linear"};
  slm::OptimizerOptions opt;
  opt.lr = 1e-2;
  opt.weight_decay = 0.1;
  opt.schedule = slm::LrSchedule::Cosine;
  opt.warmup_steps = 2;
  opt.total_steps = 6;
  const slm::TrainBatch b = batch();
  slm::Trainer straight(model, lora, opt);
  for (int i = 0; i < 6; ++i) straight.train_step(b);

  const auto dir = std::filesystem::path(SLM_BINARY_DIR) / "tests" / "train_tiny" / "checkpoint";
  {
    slm::Trainer first(model, lora, opt);
    for (int i = 0; i < 3; ++i) first.train_step(b);
    first.save_checkpoint(dir, "tiny");
  }
  slm::Trainer resumed(model, lora, opt);
  resumed.load_checkpoint(dir);
  EXPECT_EQ(resumed.steps_done(), 3);
  for (int i = 0; i < 3; ++i) resumed.train_step(b);
  const auto want = straight.parameter_tensors(), got = resumed.parameter_tensors();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(std::memcmp(want[i].second.data(), got[i].second.data(), want[i].second.nbytes()), 0) << want[i].first;
  }
}

TEST_F(TrainerTest, RejectsBadOptions) {
  const slm::Model model = tiny_model("llama");
  slm::LoraOptions lora;
  lora.rank = 0;
  EXPECT_THROW(slm::Trainer(model, lora, {}), slm::Error);
  lora.rank = 4;
  lora.targets = {"c_attn"};
  EXPECT_THROW(slm::Trainer(model, lora, {}), slm::Error);
  lora.targets = {"q_proj"};
  slm::OptimizerOptions opt;
  opt.lr = -1;
  EXPECT_THROW(slm::Trainer(model, lora, opt), slm::Error);
}

}  // namespace
