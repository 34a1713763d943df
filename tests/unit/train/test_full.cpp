// Full fine-tuning (Trainer::full) and gradient checkpointing: a tiny model
// learns a few examples, the checkpoint is a model folder that the inference
// forward runs to the trainer's loss, resuming is bit-identical, and
// recomputing each layer in backward changes no gradient bit. (Gradients of
// every weight are checked against PyTorch by test_lora_parity's full_*
// fixtures and against finite differences in test_lora.cpp.)
#include "trainer_fixture.h"

#include <slm/error.h>
#include <slm/model.h>
#include <slm/train.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

namespace {

namespace fs = std::filesystem;

slm::OptimizerOptions schedule(int64_t steps) {
  slm::OptimizerOptions opt;
  opt.lr = 1e-2;
  opt.weight_decay = 0.1;
  opt.schedule = slm::LrSchedule::Cosine;
  opt.warmup_steps = 2;
  opt.total_steps = steps;
  return opt;
}

void expect_identical(const std::vector<std::pair<std::string, slm::Tensor>>& want,
                      const std::vector<std::pair<std::string, slm::Tensor>>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(want[i].first, got[i].first);
    EXPECT_EQ(std::memcmp(want[i].second.data(), got[i].second.data(), want[i].second.nbytes()), 0) << want[i].first;
  }
}

TEST_F(TrainerTest, FullTrainingOverfitsAFewExamples) {
  for (const char* arch : {"llama", "qwen3"}) {  // qwen3: q/k norm
    SCOPED_TRACE(arch);
    const slm::Model model = tiny_model(arch);
    slm::Trainer trainer = slm::Trainer::full(model, schedule(80), slm::DType::F32);
    EXPECT_TRUE(trainer.is_full());
    EXPECT_EQ(trainer.trainable_parameters(), model.config().parameter_count());
    EXPECT_TRUE(trainer.target_modules().empty());
    const slm::TrainBatch b = batch();
    const double first = trainer.train_step(b);
    double last = first;
    for (int step = 1; step < 80; ++step) last = trainer.train_step(b);
    EXPECT_GT(first, 3.0);
    EXPECT_LT(last, 0.05);
  }
}

// The checkpoint folder is a Hugging Face model: loaded back and run by
// Model::forward, it predicts what the trainer predicts; in bf16 it is the
// trainer's weights rounded once.
TEST_F(TrainerTest, FullCheckpointIsTheTrainedModel) {
  const fs::path base_dir = tiny_model_dir("qwen2");
  const slm::Model base = slm::Model::load(base_dir);
  slm::Trainer trainer = slm::Trainer::full(base, schedule(5), slm::DType::F32);
  const slm::TrainBatch b = batch();
  for (int i = 0; i < 5; ++i) trainer.train_step(b);
  const double want = trainer.evaluate(b);
  const fs::path dir = work_dir() / "full_checkpoint";
  fs::remove_all(dir);
  trainer.save_checkpoint(dir, base_dir.string());
  for (const char* file : {"config.json", "model.safetensors", "generation_config.json", "optimizer.safetensors",
                           "trainer_state.json"}) {
    EXPECT_TRUE(fs::exists(dir / file)) << file;
  }
  slm::Model saved = slm::Model::load(dir);
  EXPECT_EQ(saved.dtype(), slm::DType::F32);
  EXPECT_NEAR(forward_loss(saved, b), want, 1e-4 * want);
  EXPECT_GT(std::fabs(forward_loss(saved, b) - slm::Trainer::full(base, {}, slm::DType::F32).evaluate(b)), 0.1)
      << "training should have changed the model";

  slm::Trainer rounded = slm::Trainer::full(base, schedule(5), slm::DType::BF16);
  for (int i = 0; i < 5; ++i) rounded.train_step(b);
  rounded.save_checkpoint(dir, base_dir.string());
  slm::Model saved_bf16 = slm::Model::load(dir);
  EXPECT_EQ(saved_bf16.config().torch_dtype, slm::DType::BF16);
  EXPECT_EQ(saved_bf16.dtype(), slm::DType::BF16);
  EXPECT_NEAR(forward_loss(saved_bf16, b), want, 2e-2 * want);
}

// Three steps, a checkpoint, three more in a fresh trainer: bit-identical to
// six uninterrupted steps, whether the folder holds f32 weights (the master
// copy itself) or bf16 (the master copy then lives in optimizer.safetensors).
TEST_F(TrainerTest, FullResumeEqualsUninterrupted) {
  const fs::path base_dir = tiny_model_dir("llama");
  const slm::Model model = slm::Model::load(base_dir);
  const slm::TrainBatch b = batch();
  slm::Trainer straight = slm::Trainer::full(model, schedule(6), slm::DType::F32);
  for (int i = 0; i < 6; ++i) straight.train_step(b);
  for (const slm::DType dtype : {slm::DType::F32, slm::DType::BF16}) {
    SCOPED_TRACE(std::string(slm::dtype_name(dtype)));
    const fs::path dir = work_dir() / "full_resume";
    fs::remove_all(dir);
    {
      slm::Trainer first = slm::Trainer::full(model, schedule(6), dtype);
      for (int i = 0; i < 3; ++i) first.train_step(b);
      first.save_checkpoint(dir, base_dir.string());
    }
    slm::Trainer resumed = slm::Trainer::full(model, schedule(6), dtype);
    resumed.load_checkpoint(dir);
    EXPECT_EQ(resumed.steps_done(), 3);
    for (int i = 0; i < 3; ++i) resumed.train_step(b);
    expect_identical(straight.parameter_tensors(), resumed.parameter_tensors());
  }
}

// Recomputing each layer in backward from its saved input gives the very same
// gradients, with LoRA dropout on (the masks are drawn again) and when full.
TEST_F(TrainerTest, GradientCheckpointingChangesNoBit) {
  for (const bool full : {false, true}) {
    for (const char* arch : {"llama", "qwen3"}) {
      SCOPED_TRACE(std::string(arch) + (full ? " full" : " lora"));
      const slm::Model model = tiny_model(arch);
      slm::LoraOptions lora;
      lora.rank = 4;
      lora.dropout = 0.2;
      lora.seed = 3;
      lora.targets = {"all-linear"};
      auto make = [&] { return full ? slm::Trainer::full(model, {}, slm::DType::F32) : slm::Trainer(model, lora, {}); };
      slm::Trainer plain = make(), checkpointed = make();
      checkpointed.set_gradient_checkpointing(true);
      const slm::TrainBatch b = batch();
      for (slm::Trainer* t : {&plain, &checkpointed}) {
        t->train_step(b);  // B ≠ 0 after one step, so every LoRA gradient is non-zero
        t->zero_grad();
      }
      const double loss = plain.accumulate_gradients(b, 1.0);
      EXPECT_EQ(checkpointed.accumulate_gradients(b, 1.0), loss);
      expect_identical(plain.gradient_tensors(), checkpointed.gradient_tensors());
    }
  }
}

TEST_F(TrainerTest, FullRejectsBadOptions) {
  const slm::Model model = tiny_model("llama");
  EXPECT_THROW(slm::Trainer::full(model, {}, slm::DType::Q8), slm::Error);
  slm::OptimizerOptions opt;
  opt.lr = 0;
  EXPECT_THROW(slm::Trainer::full(model, opt, slm::DType::F32), slm::Error);
  slm::Trainer full = slm::Trainer::full(model, {}, slm::DType::F32);
  EXPECT_THROW(full.save_adapter(work_dir() / "no_adapter", "tiny"), slm::Error);
}

}  // namespace
