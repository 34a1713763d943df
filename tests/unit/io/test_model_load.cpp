// Loading a model folder: what create_random_model writes loads back (one
// file or shards, every dtype), and each broken folder is reported by file
// and tensor name.
#include "io/safetensors.h"
#include "io_test_util.h"

#include <slm/model.h>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <cstring>

namespace {

using slm::DType;
using slm::Model;
using slm::test::ThrowsErrorWith;

slm::LoadOptions on_device(const std::string& device) {
  slm::LoadOptions options;
  options.device = device;
  return options;
}

slm::LoadOptions as_dtype(DType dtype) {
  slm::LoadOptions options;
  options.dtype = dtype;
  return options;
}

class ModelLoad : public slm::test::TempDirTest {
 protected:
  void create(slm::ModelConfig config, DType dtype = DType::F32, int64_t shards = 1) {
    slm::CreateOptions options;
    options.dtype = dtype;
    options.shards = shards;
    options.seed = 3;
    slm::create_random_model(config, options, dir_);
  }
  // Rewrites model.safetensors through `edit`, which may drop, rename or add tensors.
  void edit_weights(const std::function<void(std::vector<std::pair<std::string, slm::Tensor>>&)>& edit) {
    std::vector<std::pair<std::string, slm::Tensor>> tensors;
    {
      const auto file = slm::SafetensorsFile::open(dir_ / "model.safetensors");
      for (const auto& [name, entry] : file.entries()) {
        const slm::Tensor view = file.tensor(name);
        slm::Tensor copy = slm::Tensor::zeros(view.dtype(), view.shape());
        std::memcpy(copy.data(), view.data(), view.nbytes());
        tensors.emplace_back(name, copy);
      }
    }
    edit(tensors);
    slm::write_safetensors(dir_ / "model.safetensors", tensors);
  }
};

TEST_F(ModelLoad, CreatedModelLoadsWithEveryDtype) {
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    create(slm::shape_preset("tiny"), dtype);
    const Model model = Model::load(dir_);
    EXPECT_EQ(model.dtype(), dtype);  // auto keeps the file's dtype
    EXPECT_EQ(model.config().hidden_size, 64);
    EXPECT_EQ(model.weights().layers.size(), 2u);
    const Model converted = Model::load(dir_, as_dtype(DType::F32));
    EXPECT_EQ(converted.dtype(), DType::F32);
    // Conversion at load is exact from 16-bit to f32.
    const slm::Tensor& a = model.weights().layers[1].down_proj;
    const slm::Tensor& b = converted.weights().layers[1].down_proj;
    for (int64_t i = 0; i < a.numel(); i += 97) ASSERT_EQ(a.at(i), b.at(i));
  }
}

TEST_F(ModelLoad, ShardedEqualsSingleFile) {
  create(slm::shape_preset("tiny"), DType::BF16, 1);
  const Model single = Model::load(dir_);
  std::filesystem::remove_all(dir_);
  create(slm::shape_preset("tiny"), DType::BF16, 4);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "model.safetensors"));
  const Model sharded = Model::load(dir_);
  const slm::Tensor& a = single.weights().embed_tokens;
  const slm::Tensor& b = sharded.weights().embed_tokens;
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
}

TEST_F(ModelLoad, EveryArchitectureRoundTrips) {
  for (const char* arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    slm::ModelConfig c = slm::shape_preset("tiny");
    c.model_type = arch;
    c.attention_bias = c.model_type == "qwen2";
    c.qk_norm = c.model_type == "qwen3";
    c.tie_word_embeddings = c.model_type == "qwen2";
    if (c.model_type == "mistral") c.sliding_window = 16;
    std::filesystem::remove_all(dir_);
    create(c);
    const Model m = Model::load(dir_);
    SCOPED_TRACE(arch);
    EXPECT_EQ(m.config().model_type, arch);
    EXPECT_EQ(m.weights().layers[0].q_bias.empty(), c.model_type != "qwen2");
    EXPECT_EQ(m.weights().layers[0].q_norm.empty(), c.model_type != "qwen3");
    EXPECT_EQ(m.weights().lm_head.data() == m.weights().embed_tokens.data(), c.tie_word_embeddings);
    EXPECT_EQ(m.config().layer_window(1), c.model_type == "mistral" ? 16 : 0);
  }
}

TEST_F(ModelLoad, MissingConfig) {
  create(slm::shape_preset("tiny"));
  std::filesystem::remove(dir_ / "config.json");
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"config.json"}));
}

TEST_F(ModelLoad, NotAFolder) {
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_ / "nothing-here"); }, {"nothing-here"}));
}

TEST_F(ModelLoad, MissingWeights) {
  create(slm::shape_preset("tiny"));
  std::filesystem::remove(dir_ / "model.safetensors");
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {dir_.string(), "model.safetensors"}));
}

TEST_F(ModelLoad, MissingTensorIsNamed) {
  create(slm::shape_preset("tiny"));
  edit_weights([](auto& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.first == "model.layers.1.mlp.up_proj.weight"; });
  });
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"missing tensor", "model.layers.1.mlp.up_proj.weight"}));
}

// Phi-3's fused tensors are named as the checkpoint holds them: a missing
// qkv_proj, a gate_up_proj of another shape, or the split names in its place.
TEST_F(ModelLoad, FusedTensorsAreNamedAsTheCheckpointHoldsThem) {
  slm::ModelConfig c = slm::shape_preset("tiny");
  c.model_type = "phi3";
  c.set_family_options(false);
  create(c);
  const Model m = Model::load(dir_);
  EXPECT_EQ(m.weights().layers[1].k_proj.dim(0), c.num_key_value_heads * c.head_dim);
  edit_weights([](auto& tensors) {
    for (auto& [name, t] : tensors) {
      if (name == "model.layers.1.mlp.gate_up_proj.weight") t = t.rows(0, t.dim(0) - 2);
    }
  });
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"model.layers.1.mlp.gate_up_proj.weight", "[318, 64]", "[320, 64]"}));
  edit_weights([](auto& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.first == "model.layers.0.self_attn.qkv_proj.weight"; });
  });
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"missing tensor", "model.layers.0.self_attn.qkv_proj.weight"}));
  create(slm::shape_preset("tiny"));  // a llama folder, relabelled
  std::ifstream in(dir_ / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["model_type"] = "phi3";
  write("config.json", j.dump());
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"missing tensor", "self_attn.qkv_proj.weight"}));
}

TEST_F(ModelLoad, UntiedModelWithoutLmHead) {
  create(slm::shape_preset("tiny"));  // tiny is untied
  edit_weights([](auto& tensors) { std::erase_if(tensors, [](const auto& t) { return t.first == "lm_head.weight"; }); });
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"lm_head.weight"}));
}

TEST_F(ModelLoad, UnexpectedTensorIsNamed) {
  create(slm::shape_preset("tiny"));
  edit_weights([](auto& tensors) { tensors.emplace_back("model.layers.7.extra.weight", slm::Tensor::zeros(DType::F32, {4})); });
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"unexpected tensor", "model.layers.7.extra.weight"}));
}

TEST_F(ModelLoad, ShapeThatDisagreesWithConfig) {
  create(slm::shape_preset("tiny"));
  edit_weights([](auto& tensors) {
    for (auto& [name, t] : tensors) {
      if (name == "model.layers.0.self_attn.k_proj.weight") t = slm::Tensor::zeros(t.dtype(), {t.dim(1), t.dim(0)});
    }
  });
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"model.layers.0.self_attn.k_proj.weight", "[64, 32]", "[32, 64]"}));
}

TEST_F(ModelLoad, ConfigThatDisagreesWithWeights) {
  create(slm::shape_preset("tiny"));
  std::ifstream in(dir_ / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["num_hidden_layers"] = 3;
  write("config.json", j.dump());
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"model.layers.2."}));
  j["num_hidden_layers"] = 1;
  write("config.json", j.dump());
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"unexpected tensor", "model.layers.1."}));
}

TEST_F(ModelLoad, TruncatedWeights) {
  create(slm::shape_preset("tiny"));
  const auto path = dir_ / "model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_); }, {"model.safetensors", "past the end"}));
}

TEST_F(ModelLoad, DeviceOptions) {
  create(slm::shape_preset("tiny"));
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_, on_device("cuda")); }, {"--device cuda", "no GPU found"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_, on_device("cuda:1")); }, {"cuda:1"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_, on_device("tpu")); }, {"tpu"}));
  EXPECT_NO_THROW(Model::load(dir_, on_device("cpu")));
}

TEST_F(ModelLoad, CreateRejectsBadOptionsBeforeWriting) {
  slm::CreateOptions options;
  options.shards = 0;
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::create_random_model(slm::shape_preset("tiny"), options, dir_ / "out"); }, {"--shards"}));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out" / "model.safetensors"));
  EXPECT_TRUE(ThrowsErrorWith([] { slm::shape_preset("gpt-5"); }, {"gpt-5", "tiny"}));
}

TEST_F(ModelLoad, SameSeedSameWeightsDifferentSeedDifferent) {
  create(slm::shape_preset("tiny"));
  const auto first = slm::SafetensorsFile::open(dir_ / "model.safetensors").tensor("model.layers.0.mlp.up_proj.weight");
  std::vector<float> a(first.data_as<float>(), first.data_as<float>() + first.numel());
  create(slm::shape_preset("tiny"));
  const auto again = slm::SafetensorsFile::open(dir_ / "model.safetensors").tensor("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(std::memcmp(a.data(), again.data(), again.nbytes()), 0);
  slm::CreateOptions other;
  other.seed = 4;
  slm::create_random_model(slm::shape_preset("tiny"), other, dir_);
  const auto different = slm::SafetensorsFile::open(dir_ / "model.safetensors").tensor("model.layers.0.mlp.up_proj.weight");
  EXPECT_NE(std::memcmp(a.data(), different.data(), different.nbytes()), 0);
  // init_std is honoured: sample standard deviation within 5% of 0.02.
  double sum_sq = 0;
  for (float v : a) sum_sq += double(v) * v;
  EXPECT_NEAR(std::sqrt(sum_sq / double(a.size())), 0.02, 0.001);
}

}  // namespace

namespace {

TEST_F(ModelLoad, QuantizedAtLoad) {
  create(slm::shape_preset("tiny"), DType::BF16);
  for (DType dtype : {DType::Q8, DType::Q4}) {
    const Model m = Model::load(dir_, as_dtype(dtype));
    EXPECT_EQ(m.dtype(), dtype);
    // Norms stay f32 whatever the weights become.
    EXPECT_EQ(m.weights().layers[0].attn_norm.dtype(), DType::F32);
  }
  // A width that is not a whole number of 32-blocks cannot be quantized: a clear error.
  slm::ModelConfig c = slm::shape_preset("tiny");
  c.hidden_size = 48;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;
  c.head_dim = 16;
  std::filesystem::remove_all(dir_);
  create(c);
  EXPECT_TRUE(ThrowsErrorWith([&] { Model::load(dir_, as_dtype(DType::Q8)); }, {"q8", "32"}));
}

}  // namespace
