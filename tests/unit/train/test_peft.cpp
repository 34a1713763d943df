// PEFT adapter folders: what slm writes is what Python peft expects, a save
// and load round-trips exactly, and configs slm cannot apply are refused by name.
#include "io/peft.h"

#include <slm/error.h>
#include <slm/model.h>
#include <slm/train.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;

fs::path work_dir(const std::string& name) {
  const fs::path dir = fs::path(SLM_BINARY_DIR) / "tests" / "peft" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

slm::Model tiny_model(const fs::path& dir) {
  slm::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 20;
  c.max_position_embeddings = 32;
  c.rope_theta = 10000;
  slm::create_random_model(slm::ModelConfig::from_json(c.to_json(), "tiny"), {}, dir);
  return slm::Model::load(dir);
}

TEST(Peft, SaveWritesPeftLayoutAndLoadRoundTrips) {
  const fs::path dir = work_dir("round_trip");
  const slm::Model model = tiny_model(dir / "model");
  slm::LoraOptions lora;
  lora.rank = 4;
  lora.alpha = 8;
  lora.dropout = 0.05;
  lora.targets = {"q_proj", "down_proj"};
  slm::Trainer trainer(model, lora, {});
  for (auto& [name, t] : trainer.parameter_tensors()) {
    for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(i % 7) * 0.25f - 0.5f;
  }
  trainer.save_adapter(dir / "adapter", "some/base-model");

  std::ifstream in(dir / "adapter" / "adapter_config.json");
  const nlohmann::json config = nlohmann::json::parse(in);
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8.0);
  EXPECT_EQ(config["lora_dropout"], 0.05);
  EXPECT_EQ(config["target_modules"], nlohmann::json({"q_proj", "down_proj"}));
  EXPECT_EQ(config["bias"], "none");
  EXPECT_EQ(config["fan_in_fan_out"], false);
  EXPECT_EQ(config["base_model_name_or_path"], "some/base-model");

  const slm::PeftAdapter adapter = slm::load_peft_adapter(dir / "adapter");
  ASSERT_EQ(adapter.tensors.size(), 8u);  // 2 layers × 2 modules × (A, B)
  const slm::Tensor& a = adapter.tensors.at("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(adapter.tensors.at("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").shape(),
            (std::vector<int64_t>{16, 4}));

  slm::Trainer restored(model, lora, {});
  restored.load_adapter(dir / "adapter");
  const auto want = trainer.parameter_tensors(), got = restored.parameter_tensors();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].first, got[i].first);
    EXPECT_EQ(std::memcmp(want[i].second.data(), got[i].second.data(), want[i].second.nbytes()), 0) << want[i].first;
  }

  // A trainer of another rank or other targets refuses it, naming the difference.
  slm::LoraOptions other = lora;
  other.rank = 8;
  slm::Trainer wrong_rank(model, other, {});
  EXPECT_THROW(wrong_rank.load_adapter(dir / "adapter"), slm::Error);
  other = lora;
  other.targets = {"q_proj"};
  slm::Trainer wrong_targets(model, other, {});
  try {
    wrong_targets.load_adapter(dir / "adapter");
    FAIL() << "loaded an adapter with other target modules";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("down_proj"), std::string::npos) << e.what();
  }
}

TEST(Peft, ConfigAcceptsAllLinearStringAndRejectsWhatSlmCannotApply) {
  const auto ok = slm::PeftLoraConfig::from_json(
      R"({"peft_type":"LORA","r":16,"lora_alpha":32,"target_modules":"all-linear","bias":"none"})", "a.json");
  EXPECT_EQ(ok.r, 16);
  EXPECT_EQ(ok.lora_alpha, 32.0);
  EXPECT_EQ(ok.target_modules, std::vector<std::string>{"all-linear"});
  const auto again = slm::PeftLoraConfig::from_json(ok.to_json(), "b.json");
  EXPECT_EQ(again.target_modules, ok.target_modules);
  for (const char* bad : {
           R"({"peft_type":"PREFIX_TUNING","r":8,"lora_alpha":16,"target_modules":["q_proj"]})",
           R"({"peft_type":"LORA","r":0,"lora_alpha":16,"target_modules":["q_proj"]})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"],"bias":"all"})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"],"use_dora":true})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"],"fan_in_fan_out":true})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":[]})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":1e999,"target_modules":["q_proj"]})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"lora_dropout":1,"target_modules":["q_proj"]})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"lora_dropout":-0.1,"target_modules":["q_proj"]})",
           R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"],"modules_to_save":["lm_head"]})",
           R"(not json)",
       }) {
    try {
      slm::PeftLoraConfig::from_json(bad, "adapter_config.json");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const slm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("adapter_config.json"), std::string::npos) << e.what();
    }
  }
}

TEST(Peft, MissingFolderIsAClearError) {
  try {
    slm::load_peft_adapter(work_dir("empty"));
    FAIL();
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("adapter_config.json"), std::string::npos);
  }
}

}  // namespace
