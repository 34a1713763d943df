// GGUF export and load: a Hugging Face folder written as GGUF and read back
// gives the folder's logits (f32 to float rounding, bf16/q8_0/q4_0 exactly
// what slm's own --dtype path gives), for each family's layout (llama's q/k
// row permutation, qwen2's biases, qwen3's q/k norms, head_dim != hidden/heads,
// Llama 3 rope scaling); the LoRA GGUF holds llama.cpp's names and shapes;
// the K-quant dequantizers agree with a slow reading of the block formats.
#include <slm/error.h>
#include <slm/export.h>
#include <slm/model.h>
#include <slm/random.h>
#include <slm/tokenizer.h>
#include <slm/train.h>

#include "core/half.h"
#include "core/kquant.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "model/gguf_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
const fs::path kTinyModel = fs::path(SLM_SOURCE_DIR) / "models" / "slm-tiny";

slm::ModelConfig small_config(const std::string& model_type) {
  slm::ModelConfig c;
  c.model_type = model_type;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;  // != hidden / heads: key_length and value_length are written
  c.vocab_size = 4096;  // slm-tiny's tokenizer
  c.max_position_embeddings = 256;
  c.rope_theta = 50000;
  c.bos_token_ids = {0};
  c.eos_token_ids = {0};
  c.set_family_options(model_type == "llama");  // llama with biases on all four projections
  if (c.post_norms) {
    // Gemma as llama.cpp runs it: scores scaled by head_dim^-1/2, its own layer pattern.
    c.query_pre_attn_scalar = static_cast<double>(c.head_dim);
    c.sliding_window = 4;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      c.sliding_layers.push_back(model_type == "gemma2" ? l % 2 == 0 : (l + 1) % 6 != 0);
    }
    if (model_type == "gemma3_text") c.rope_local_theta = 10000;
    c.tie_word_embeddings = model_type == "gemma2";  // llama.cpp's gemma2 always ties
  }
  if (c.fused_projections) {
    // llama.cpp's phi3 rotates hidden / heads dimensions; longrope over an original 128.
    c.head_dim = 16;
    c.sliding_window = 4;
    c.rope_scaling = slm::RopeScaling::LongRope;
    c.rope_original_max_position_embeddings = 128;
    c.rope_short_factor = {1, 1.1f, 1.3f, 1.6f, 2, 2.5f, 3, 4};
    c.rope_long_factor = {1.5f, 2, 3, 4, 6, 8, 12, 16};
    c.rope_attention_factor = slm::longrope_attention_factor(2.0, 128);
  }
  return c;
}

class GgufExport : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("slm_gguf_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path make_model(const slm::ModelConfig& c, const std::string& name) {
    const fs::path out = dir_ / name;
    slm::CreateOptions options;
    options.seed = 7;
    options.init_std = 0.05;
    slm::create_random_model(c, options, out);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(kTinyModel / f, out / f);
    return out;
  }

  static std::vector<float> logits(const slm::Model& m) {
    const std::vector<int32_t> ids = {5, 300, 17, 4000, 42, 9, 123, 77};
    slm::KVCache cache(m.config(), 64);
    const auto out = m.forward(ids, cache);
    std::vector<float> all(ids.size() * static_cast<size_t>(m.config().vocab_size));
    m.logits(out, static_cast<int64_t>(ids.size()), all);
    return all;
  }

  static double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
    return worst;
  }

  fs::path dir_;
};

TEST_F(GgufExport, RoundTripGivesTheFolderLogitsForEveryFamilyAndType) {
  for (const std::string family : {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"}) {
    const fs::path folder = make_model(small_config(family), family);
    slm::LoadOptions f32;
    f32.dtype = slm::DType::F32;
    const std::vector<float> expected = logits(slm::Model::load(folder, f32));
    for (const auto& [type, dtype] : {std::pair{"f32", slm::DType::F32}, std::pair{"f16", slm::DType::F16},
                                      std::pair{"bf16", slm::DType::BF16}, std::pair{"q8_0", slm::DType::Q8},
                                      std::pair{"q4_0", slm::DType::Q4}}) {
      SCOPED_TRACE(family + " " + type);
      const fs::path gguf = dir_ / (family + "-" + type + ".gguf");
      slm::GgufExportOptions options;
      options.type = slm::parse_gguf_weight_type(type);
      slm::export_gguf(folder, gguf, options);
      const slm::Model loaded = slm::Model::load(gguf);
      EXPECT_EQ(loaded.dtype(), dtype);
      const slm::ModelConfig& c = loaded.config();
      EXPECT_EQ(c.model_type, family == "mistral" ? "llama" : family);  // llama.cpp converts Mistral to llama
      EXPECT_EQ(c.head_dim, family == "phi3" ? 16 : 32);
      EXPECT_EQ(c.attention_bias, family == "llama" || family == "qwen2");
      EXPECT_EQ(c.qk_norm, family == "qwen3" || family == "gemma3_text");
      EXPECT_EQ(c.tie_word_embeddings, family == "gemma2");
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_EQ(c.layer_window(l), small_config(family).layer_window(l));
      slm::LoadOptions same;
      same.dtype = dtype;
      const double error = max_difference(logits(loaded), logits(slm::Model::load(folder, same)));
      if (family.starts_with("gemma")) {
        // Gemma's norms travel as 1 + weight: one f32 rounding each way.
        EXPECT_LT(error, 1e-4);
      } else {
        EXPECT_EQ(error, 0.0) << "the GGUF path must give what --dtype " << slm::dtype_name(dtype) << " gives";
      }
      if (dtype == slm::DType::F32) {
        EXPECT_LT(max_difference(logits(loaded), expected), 1e-5);
      }
    }
  }
}

TEST_F(GgufExport, LlamaRowsAreInterleavedAsLlamaCppExpects) {
  // convert_hf_to_gguf.py: w.reshape(heads, 2, rows/heads/2, in).swapaxes(1, 2).reshape(rows, in).
  const int64_t heads = 2, rows = 8, in = 3;
  slm::Tensor w = slm::Tensor::zeros(slm::DType::F32, {rows, in});
  for (int64_t i = 0; i < w.numel(); ++i) w.data_as<float>()[i] = static_cast<float>(i);
  const slm::Tensor p = slm::permute_qk_rows(w, heads, true);
  const int64_t half = rows / heads / 2;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t a = 0; a < half; ++a) {
      for (int64_t b = 0; b < 2; ++b) {
        const int64_t out_row = (h * half + a) * 2 + b, in_row = (h * 2 + b) * half + a;
        for (int64_t k = 0; k < in; ++k) EXPECT_EQ(p.at(out_row * in + k), w.at(in_row * in + k));
      }
    }
  }
  const slm::Tensor back = slm::permute_qk_rows(p, heads, false);
  for (int64_t i = 0; i < w.numel(); ++i) EXPECT_EQ(back.at(i), w.at(i));
}

TEST_F(GgufExport, MetadataAndNamesAreLlamaCpps) {
  slm::ModelConfig c = small_config("llama");
  c.tie_word_embeddings = true;
  c.rope_scaling = slm::RopeScaling::Llama3;
  c.rope_factor = 8;
  c.rope_original_max_position_embeddings = 64;
  const fs::path folder = make_model(c, "tied");
  const fs::path gguf = dir_ / "tied.gguf";
  slm::export_gguf(folder, gguf);
  const slm::GgufFile f = slm::GgufFile::open(gguf);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_integer("llama.embedding_length"), 64);
  EXPECT_EQ(f.get_integer("llama.attention.key_length"), 32);
  EXPECT_EQ(f.get_integer("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(f.get_integer("llama.context_length"), 256);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("llama.rope.freq_base")), 50000.0f);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.string_array("tokenizer.ggml.tokens").size(), 4096u);
  EXPECT_FALSE(f.string_array("tokenizer.ggml.merges").empty());
  EXPECT_FALSE(f.get_string("tokenizer.chat_template").empty());
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);  // tied: llama.cpp reuses token_embd
  for (const char* name : {"token_embd.weight", "blk.1.attn_q.weight", "blk.1.attn_q.bias", "blk.0.attn_output.bias",
                           "blk.0.ffn_down.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight",
                           "output_norm.weight", "rope_freqs.weight"}) {
    EXPECT_NE(f.find_tensor(name), nullptr) << name;
  }
  const auto* q = f.find_tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q->dims, (std::vector<uint64_t>{64, 128}));
  EXPECT_EQ(f.find_tensor("blk.0.attn_norm.weight")->type, static_cast<uint32_t>(slm::GgmlType::F32));
  // Llama 3 scaling travels as llama.cpp's per-frequency divisors and gives the same rotation.
  const slm::Model loaded = slm::Model::load(gguf);
  const slm::Model original = slm::Model::load(folder);
  ASSERT_EQ(loaded.rope_frequencies().size(), original.rope_frequencies().size());
  for (size_t i = 0; i < loaded.rope_frequencies().size(); ++i) {
    EXPECT_NEAR(loaded.rope_frequencies()[i], original.rope_frequencies()[i], 1e-6 * original.rope_frequencies()[i]);
  }
  EXPECT_LT(max_difference(logits(loaded), logits(original)), 1e-4);
}

// Phi-3's fused projections and longrope factors, Gemma's extra norms stored
// as 1 + weight, under llama.cpp's names and shapes; what llama.cpp's
// architecture cannot express is refused before anything is written.
TEST_F(GgufExport, GemmaAndPhi3LayoutsAreLlamaCpps) {
  {
    const fs::path folder = make_model(small_config("phi3"), "phi3");
    const fs::path gguf = dir_ / "phi3.gguf";
    slm::export_gguf(folder, gguf);
    const slm::GgufFile f = slm::GgufFile::open(gguf);
    EXPECT_EQ(f.get_string("general.architecture"), "phi3");
    EXPECT_EQ(f.find_tensor("blk.0.attn_qkv.weight")->dims, (std::vector<uint64_t>{64, 64 + 2 * 32}));
    EXPECT_EQ(f.find_tensor("blk.0.ffn_up.weight")->dims, (std::vector<uint64_t>{64, 2 * 96}));
    EXPECT_EQ(f.find_tensor("blk.0.ffn_gate.weight"), nullptr);
    EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight"), nullptr);
    EXPECT_EQ(f.get_integer("phi3.rope.scaling.original_context_length"), 128);
    EXPECT_EQ(f.get_integer("phi3.attention.sliding_window"), 4);
    EXPECT_NEAR(f.get_float("phi3.rope.scaling.attn_factor"), slm::longrope_attention_factor(2.0, 128), 1e-6);
    const auto* long_factors = f.find_tensor("rope_factors_long.weight");
    ASSERT_NE(long_factors, nullptr);
    EXPECT_EQ(reinterpret_cast<const float*>(f.tensor_data(*long_factors))[7], 16.0f);
    const slm::Model loaded = slm::Model::load(gguf);
    EXPECT_EQ(loaded.config().rope_long_factor, small_config("phi3").rope_long_factor);
    EXPECT_EQ(loaded.config().rope_short_factor, small_config("phi3").rope_short_factor);
  }
  {
    const fs::path folder = make_model(small_config("gemma2"), "gemma2");
    const fs::path gguf = dir_ / "gemma2.gguf";
    slm::export_gguf(folder, gguf);
    const slm::GgufFile f = slm::GgufFile::open(gguf);
    for (const char* name : {"blk.1.post_attention_norm.weight", "blk.1.ffn_norm.weight", "blk.1.post_ffw_norm.weight"}) {
      EXPECT_NE(f.find_tensor(name), nullptr) << name;
    }
    EXPECT_EQ(f.get_integer("gemma2.attention.sliding_window"), 4);
    EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("gemma2.attn_logit_softcapping")), 50.0f);
    const slm::Model original = slm::Model::load(folder);
    const float* stored = reinterpret_cast<const float*>(f.tensor_data(*f.find_tensor("blk.1.ffn_norm.weight")));
    EXPECT_EQ(stored[3], original.weights().layers[1].mlp_norm.at(3) + 1.0f);
  }
  slm::ModelConfig c = small_config("gemma2");
  c.query_pre_attn_scalar = 20;
  const fs::path scaled = make_model(c, "scaled");
  try {
    slm::export_gguf(scaled, dir_ / "scaled.gguf");
    FAIL() << "exported a query_pre_attn_scalar llama.cpp would not apply";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("query_pre_attn_scalar 20"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "scaled.gguf"));
}

// A model with more embedding rows than its tokenizer has tokens (Qwen2.5 and
// SmolLM pad theirs) gets unused "[PADn]" tokens up to vocab_size, as
// llama.cpp's converter writes them: llama.cpp refuses a token count that is
// not the embedding's. The file loads back in slm with the same logits.
TEST_F(GgufExport, TokensArePaddedToTheModelsVocabulary) {
  slm::ModelConfig c = small_config("llama");
  c.vocab_size = 4100;
  const fs::path folder = make_model(c, "padded");
  const fs::path gguf = dir_ / "padded.gguf";
  slm::export_gguf(folder, gguf);
  const slm::GgufFile f = slm::GgufFile::open(gguf);
  const auto tokens = f.string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 4100u);
  EXPECT_EQ(tokens[4096], "[PAD4096]");
  EXPECT_EQ(tokens[4099], "[PAD4099]");
  EXPECT_EQ(tokens[4095], slm::Tokenizer::from_dir(folder).id_to_token(4095).value());
  EXPECT_LE(max_difference(logits(slm::Model::load(gguf)), logits(slm::Model::load(folder))), 1e-5);

  c.vocab_size = 4000;  // fewer rows than tokens: no GGUF llama.cpp could load
  const fs::path small = make_model(c, "small");
  try {
    slm::export_gguf(small, dir_ / "small.gguf");
    FAIL() << "a tokenizer larger than the embedding was exported";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("4096 tokens, more than the model's vocab_size 4000"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "small.gguf"));
}

TEST_F(GgufExport, LoraGgufHoldsThePairsInLlamaCppShapes) {
  const slm::ModelConfig c = small_config("llama");
  const fs::path folder = make_model(c, "base");
  const slm::Model base = slm::Model::load(folder);
  slm::Rng rng(3);
  slm::PeftLoraConfig config;
  config.r = 4;
  config.lora_alpha = 8;
  config.target_modules = {"q_proj", "v_proj"};
  std::vector<std::pair<std::string, slm::Tensor>> tensors;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const auto& [module, out] : {std::pair{"q_proj", int64_t{128}}, std::pair{"v_proj", int64_t{64}}}) {
      slm::LoraWeights u = slm::lora_init(64, out, 4, 8, rng);
      for (int64_t i = 0; i < u.B.numel(); ++i) u.B.data_as<float>()[i] = 0.01f * static_cast<float>(i % 7);
      const std::string p = "base_model.model.model.layers." + std::to_string(l) + ".self_attn." + module;
      tensors.emplace_back(p + ".lora_A.weight", u.A);
      tensors.emplace_back(p + ".lora_B.weight", u.B);
    }
  }
  slm::save_peft_adapter(dir_ / "adapter", config, tensors);
  const fs::path gguf = dir_ / "adapter.gguf";
  slm::export_gguf_lora(folder, dir_ / "adapter", gguf);
  const slm::GgufFile f = slm::GgufFile::open(gguf);
  EXPECT_EQ(f.get_string("general.type"), "adapter");
  EXPECT_EQ(f.get_string("adapter.type"), "lora");
  EXPECT_EQ(f.get_float("adapter.lora.alpha"), 8.0);
  EXPECT_EQ(f.tensors().size(), 8u);
  const auto* a = f.find_tensor("blk.1.attn_q.weight.lora_a");
  const auto* b = f.find_tensor("blk.1.attn_q.weight.lora_b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->dims, (std::vector<uint64_t>{64, 4}));   // ne = [in, r]
  EXPECT_EQ(b->dims, (std::vector<uint64_t>{4, 128}));  // ne = [r, out]
  // lora_b of q is permuted as the base's q rows are; v's is not.
  const slm::Tensor b_hf = tensors[4 + 1].second;  // layer 1, q_proj lora_B
  const slm::Tensor expected = slm::permute_qk_rows(b_hf, c.num_attention_heads, true);
  EXPECT_EQ(std::memcmp(f.tensor_data(*b), expected.data(), expected.nbytes()), 0);
  const auto* bv = f.find_tensor("blk.0.attn_v.weight.lora_b");
  EXPECT_EQ(std::memcmp(f.tensor_data(*bv), tensors[3].second.data(), tensors[3].second.nbytes()), 0);
}

TEST_F(GgufExport, MergedAdapterIsTheMergedModel) {
  const slm::ModelConfig c = small_config("qwen2");
  const fs::path folder = make_model(c, "base");
  slm::Rng rng(5);
  slm::PeftLoraConfig config;
  config.r = 2;
  config.lora_alpha = 4;
  config.target_modules = {"down_proj"};
  std::vector<std::pair<std::string, slm::Tensor>> tensors;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    slm::LoraWeights u = slm::lora_init(96, 64, 2, 4, rng);
    for (int64_t i = 0; i < u.B.numel(); ++i) u.B.data_as<float>()[i] = 0.02f;
    const std::string p = "base_model.model.model.layers." + std::to_string(l) + ".mlp.down_proj";
    tensors.emplace_back(p + ".lora_A.weight", u.A);
    tensors.emplace_back(p + ".lora_B.weight", u.B);
  }
  slm::save_peft_adapter(dir_ / "adapter", config, tensors);
  slm::GgufExportOptions options;
  options.type = slm::GgufWeightType::F32;
  options.adapter = dir_ / "adapter";
  slm::export_gguf(folder, dir_ / "merged.gguf", options);
  const slm::Model merged = slm::merge_adapter(slm::Model::load(folder), dir_ / "adapter", slm::DType::F32);
  EXPECT_EQ(max_difference(logits(slm::Model::load(dir_ / "merged.gguf")), logits(merged)), 0.0);
}

// The k-quant formats read the slow way: element by element, each bit found
// from the layout comments of ggml-common.h.
float f16_at(const uint8_t* p) { return slm::f16_to_f32(static_cast<uint16_t>(p[0] | p[1] << 8)); }

// Q4_K / Q5_K: the 6-bit scale and min of sub-block `sub` (of 8) in 12 bytes.
std::pair<int, int> scale_and_min(const uint8_t* scales, int sub) {
  if (sub < 4) return {scales[sub] & 63, scales[sub + 4] & 63};
  return {(scales[sub + 4] & 15) | ((scales[sub - 4] >> 6) << 4), (scales[sub + 4] >> 4) | ((scales[sub] >> 6) << 4)};
}

// Element e of a Q4_K (qh null) or Q5_K block: sub-blocks pair up on 32
// bytes of qs, the even one in the low nibbles; bit `sub` of qh[e % 32] is
// Q5_K's fifth bit.
float slow_k(const uint8_t* block, int e, const uint8_t* qh, const uint8_t* qs) {
  const int sub = e / 32;
  const auto [sc, mn] = scale_and_min(block + 4, sub);
  const uint8_t byte = qs[(sub / 2) * 32 + e % 32];
  int q = sub % 2 == 0 ? byte & 15 : byte >> 4;
  if (qh) q |= ((qh[e % 32] >> sub) & 1) << 4;
  return f16_at(block) * static_cast<float>(sc) * static_cast<float>(q) - f16_at(block + 2) * static_cast<float>(mn);
}

float slow_q4_k(const uint8_t* block, int e) { return slow_k(block, e, nullptr, block + 16); }
float slow_q5_k(const uint8_t* block, int e) { return slow_k(block, e, block + 16, block + 48); }

float slow_q6_k(const uint8_t* block, int e) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(block + 192);
  const float d = f16_at(block + 208);
  const int half = e / 128, r = e % 128, run = r / 32, l = r % 32;  // 4 runs of 32 per half
  const uint8_t low_byte = ql[64 * half + (run % 2) * 32 + l];
  const int low = run < 2 ? low_byte & 15 : low_byte >> 4;
  const int high = (qh[32 * half + l] >> (2 * run)) & 3;
  const int scale = scales[8 * half + 2 * run + l / 16];
  return d * static_cast<float>(scale) * static_cast<float>((low | high << 4) - 32);
}

TEST(KQuants, DequantizationMatchesTheSlowReading) {
  slm::Rng rng(11);
  using Fast = void (*)(const void*, int64_t, float*);
  using Slow = float (*)(const uint8_t*, int);
  for (const auto& [name, bytes, fast, slow] :
       {std::tuple<const char*, size_t, Fast, Slow>{"Q4_K", 144, slm::dequantize_q4_k, slow_q4_k},
        std::tuple<const char*, size_t, Fast, Slow>{"Q5_K", 176, slm::dequantize_q5_k, slow_q5_k},
        std::tuple<const char*, size_t, Fast, Slow>{"Q6_K", 210, slm::dequantize_q6_k, slow_q6_k}}) {
    SCOPED_TRACE(name);
    const int blocks = 3;
    std::vector<uint8_t> data(bytes * blocks);
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng.next() & 0xff);
    for (int k = 0; k < blocks; ++k) {
      // Finite, modest scales: f16 0.01..0.05 and their minima.
      uint8_t* block = data.data() + k * bytes;
      const size_t d_at = std::string_view(name) == "Q6_K" ? 208 : 0;
      const uint16_t d = slm::f32_to_f16(0.01f * static_cast<float>(k + 1));
      block[d_at] = static_cast<uint8_t>(d & 0xff);
      block[d_at + 1] = static_cast<uint8_t>(d >> 8);
      if (d_at == 0) {
        const uint16_t dmin = slm::f32_to_f16(0.003f * static_cast<float>(k + 2));
        block[2] = static_cast<uint8_t>(dmin & 0xff);
        block[3] = static_cast<uint8_t>(dmin >> 8);
      }
    }
    std::vector<float> out(256 * blocks);
    fast(data.data(), 256 * blocks, out.data());
    for (int k = 0; k < blocks; ++k) {
      for (int e = 0; e < 256; ++e) {
        ASSERT_FLOAT_EQ(out[static_cast<size_t>(k * 256 + e)], slow(data.data() + k * bytes, e)) << "block " << k << " element " << e;
      }
    }
  }
}

// Q4_1, Q5_0, Q5_1 read element by element: weight e's nibble is byte e % 16
// of qs (low for e < 16), its fifth bit bit e of the 32-bit qh.
float slow_small(const uint8_t* block, int e, bool fifth_bit, bool minimum) {
  const float d = f16_at(block);
  const float m = minimum ? f16_at(block + 2) : 0.0f;
  const uint8_t* qh = block + (minimum ? 4 : 2);
  const uint8_t* qs = qh + (fifth_bit ? 4 : 0);
  int q = e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;
  if (fifth_bit) q |= ((qh[e / 8] >> (e % 8)) & 1) << 4;
  return d * static_cast<float>(q - (minimum ? 0 : 16)) + m;
}

TEST(KQuants, SmallBlockFallbacksMatchTheSlowReading) {
  slm::Rng rng(12);
  using Fast = void (*)(const void*, int64_t, float*);
  for (const auto& [name, bytes, fast, fifth_bit, minimum] :
       {std::tuple<const char*, size_t, Fast, bool, bool>{"Q4_1", 20, slm::dequantize_q4_1, false, true},
        std::tuple<const char*, size_t, Fast, bool, bool>{"Q5_0", 22, slm::dequantize_q5_0, true, false},
        std::tuple<const char*, size_t, Fast, bool, bool>{"Q5_1", 24, slm::dequantize_q5_1, true, true}}) {
    SCOPED_TRACE(name);
    const int blocks = 5;
    std::vector<uint8_t> data(bytes * blocks);
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng.next() & 0xff);
    for (int k = 0; k < blocks; ++k) {
      uint8_t* block = data.data() + k * bytes;
      const uint16_t d = slm::f32_to_f16(0.01f * static_cast<float>(k + 1));
      std::memcpy(block, &d, 2);
      if (minimum) {
        const uint16_t m = slm::f32_to_f16(-0.05f * static_cast<float>(k + 1));
        std::memcpy(block + 2, &m, 2);
      }
    }
    std::vector<float> out(32 * blocks);
    fast(data.data(), 32 * blocks, out.data());
    for (int k = 0; k < blocks; ++k) {
      for (int e = 0; e < 32; ++e) {
        ASSERT_FLOAT_EQ(out[static_cast<size_t>(k * 32 + e)], slow_small(data.data() + k * bytes, e, fifth_bit, minimum))
            << "block " << k << " element " << e;
      }
    }
  }
}

TEST_F(GgufExport, KQuantTensorsAreWidenedAtLoad) {
  // A llama.cpp-style mixed file: one projection per layer in each k-quant.
  const slm::ModelConfig c = [] {
    slm::ModelConfig s = small_config("qwen3");
    s.hidden_size = 256;  // rows of whole 256-element superblocks
    s.head_dim = 64;
    return s;
  }();
  const fs::path folder = make_model(c, "base");
  slm::export_gguf(folder, dir_ / "f32.gguf", {slm::GgufWeightType::F32, {}});
  const slm::GgufFile f32 = slm::GgufFile::open(dir_ / "f32.gguf");
  slm::GgufWriter w;
  for (const auto& [key, value] : f32.metadata()) w.set(key, value);
  slm::Rng rng(2);
  std::vector<std::vector<uint8_t>> blocks;
  std::map<std::string, std::vector<float>> widened;
  struct Kind {
    const char* suffix;
    slm::GgmlType type;
    size_t block_elements, block_bytes;
    void (*dequantize)(const void*, int64_t, float*);
  };
  // One projection per layer in each k-quant, three more in the 32-weight fallbacks.
  const Kind kinds[] = {{"attn_q.weight", slm::GgmlType::Q4_K, 256, 144, slm::dequantize_q4_k},
                        {"attn_v.weight", slm::GgmlType::Q5_K, 256, 176, slm::dequantize_q5_k},
                        {"attn_k.weight", slm::GgmlType::Q6_K, 256, 210, slm::dequantize_q6_k},
                        {"ffn_gate.weight", slm::GgmlType::Q5_0, 32, 22, slm::dequantize_q5_0},
                        {"ffn_up.weight", slm::GgmlType::Q4_1, 32, 20, slm::dequantize_q4_1},
                        {"attn_output.weight", slm::GgmlType::Q5_1, 32, 24, slm::dequantize_q5_1}};
  for (const slm::GgufTensorInfo& t : f32.tensors()) {
    const Kind* kind = nullptr;
    for (const Kind& k : kinds) {
      if (t.name.ends_with(k.suffix)) kind = &k;
    }
    if (!kind) {
      w.add_tensor(t.name, static_cast<slm::GgmlType>(t.type), t.dims, f32.tensor_data(t), t.bytes);
      continue;
    }
    const size_t size = kind->block_bytes;
    auto& data = blocks.emplace_back(t.elements() / kind->block_elements * size);
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng.next() & 0xff);
    for (size_t k = 0; k < data.size() / size; ++k) {
      // A small scale first (Q6_K keeps it last) and, where there is one, a zero minimum.
      const size_t d_at = kind->type == slm::GgmlType::Q6_K ? 208 : 0;
      const uint16_t d = slm::f32_to_f16(0.001f);
      data[k * size + d_at] = static_cast<uint8_t>(d & 0xff);
      data[k * size + d_at + 1] = static_cast<uint8_t>(d >> 8);
      if (d_at == 0 && kind->type != slm::GgmlType::Q5_0) data[k * size + 2] = data[k * size + 3] = 0;
    }
    auto& wide = widened[t.name];
    wide.resize(t.elements());
    kind->dequantize(data.data(), static_cast<int64_t>(t.elements()), wide.data());
    w.add_tensor(t.name, kind->type, t.dims, data.data(), data.size());
  }
  w.write(dir_ / "kquant.gguf");
  slm::LoadOptions as_f32;
  as_f32.dtype = slm::DType::F32;
  const slm::Model m = slm::Model::load(dir_ / "kquant.gguf", as_f32);
  const float* q = m.weights().layers[1].q_proj.data_as<const float>();
  const auto& expected = widened["blk.1.attn_q.weight"];
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(q[i], expected[i]) << i;  // qwen3: no permutation
  for (const auto& [name, tensor] : {std::pair{"blk.1.ffn_gate.weight", &m.weights().layers[1].gate_proj},
                                     std::pair{"blk.0.ffn_up.weight", &m.weights().layers[0].up_proj},
                                     std::pair{"blk.1.attn_output.weight", &m.weights().layers[1].o_proj}}) {
    const auto& want = widened[name];
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(tensor->data_as<const float>()[i], want[i]) << name << " " << i;
  }
  EXPECT_EQ(slm::Model::load(dir_ / "kquant.gguf").weights().layers[0].k_proj.dtype(), slm::DType::Q8);
}

}  // namespace
