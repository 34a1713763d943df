// config.json and generation_config.json: real configs of every supported
// architecture parse to the right fields; bad ones give one message naming
// the file and the field.
#include "io_test_util.h"

#include <slm/model.h>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <cmath>

namespace {

using json = nlohmann::json;
using slm::ModelConfig;
using slm::RopeScaling;
using slm::test::ThrowsErrorWith;

// Abridged from the published config.json of each model.
const char* kSmolLM2 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576,
  "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
  "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
  "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152})";

const char* kQwen25 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
  "use_cache": true, "vocab_size": 128256})";

const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "sliding_window": 4096, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000})";

const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

const char* kGemma3_270m = R"({
  "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "attn_logit_softcapping": null, "bos_token_id": 2, "eos_token_id": 1,
  "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 640, "initializer_range": 0.02, "intermediate_size": 2048,
  "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
    "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
  "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
  "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": null, "rope_theta": 1000000.0,
  "sliding_window": 512, "torch_dtype": "bfloat16", "transformers_version": "4.55.0.dev0",
  "use_bidirectional_attention": false, "use_cache": true, "vocab_size": 262144})";

// Before layer_types: sliding_window_pattern.
const char* kGemma3_1b = R"({
  "architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106],
  "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
  "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
  "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
  "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": true, "vocab_size": 262144})";

const char* kGemma2_2b = R"({
  "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
  "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
  "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2",
  "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
  "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
  "torch_dtype": "float32", "transformers_version": "4.42.4", "use_cache": true, "vocab_size": 256000})";

ModelConfig parse(const json& j) { return ModelConfig::from_json(j.dump(), "test/config.json"); }

// A small valid config to break one field at a time.
json base() {
  return json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512})");
}

::testing::AssertionResult Rejects(const json& j, std::vector<std::string> words) {
  words.push_back("test/config.json");
  return ThrowsErrorWith([&] { parse(j); }, words);
}

TEST(ModelConfig, SmolLM2) {
  const ModelConfig c = ModelConfig::from_json(kSmolLM2, "smollm2/config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000);
  EXPECT_EQ(c.rope_scaling, RopeScaling::None);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.bos_token_ids, std::vector<int32_t>{0});
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{0});
  EXPECT_EQ(c.torch_dtype, slm::DType::BF16);
  EXPECT_EQ(c.parameter_count(), 134515008);  // the published parameter count
}

TEST(ModelConfig, Qwen25HasBiasAndNoWindowUnlessEnabled) {
  const ModelConfig c = ModelConfig::from_json(kQwen25, "qwen/config.json");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.attention_bias);  // Qwen2 always has q/k/v bias
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  // use_sliding_window is false: sliding_window 32768 must not apply.
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_EQ(c.layer_window(l), 0) << l;
  EXPECT_EQ(c.parameter_count(), 494032768);
}

TEST(ModelConfig, Llama32HasLlama3RopeScalingAndEosList) {
  const ModelConfig c = ModelConfig::from_json(kLlama32, "llama/config.json");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_scaling, RopeScaling::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_factor, 32);
  EXPECT_DOUBLE_EQ(c.rope_low_freq_factor, 1);
  EXPECT_DOUBLE_EQ(c.rope_high_freq_factor, 4);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_token_ids, std::vector<int32_t>{128000});
  EXPECT_EQ(c.parameter_count(), 1235814400);
}

TEST(ModelConfig, MistralSlidingWindowAppliesToEveryLayer) {
  const ModelConfig c = ModelConfig::from_json(kMistral, "mistral/config.json");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.sliding_window, 4096);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_EQ(c.layer_window(l), 4096) << l;
  EXPECT_EQ(c.parameter_count(), 7241732096);  // Mistral-7B
  json j = json::parse(kMistral);
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse(j).layer_window(0), 0);
}

TEST(ModelConfig, Qwen3HasQkNormAndExplicitHeadDim) {
  const ModelConfig c = ModelConfig::from_json(kQwen3, "qwen3/config.json");
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.head_dim, 128);  // not hidden / heads = 64
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{151645});
  EXPECT_EQ(c.layer_window(0), 0);
  EXPECT_EQ(c.parameter_count(), 596049920);  // Qwen3-0.6B, tied
}

TEST(ModelConfig, Gemma3LayerTypesLocalRopeAndTiedDefault) {
  for (const char* text : {kGemma3_270m, kGemma3_1b}) {
    const ModelConfig c = ModelConfig::from_json(text, "gemma3/config.json");
    SCOPED_TRACE(c.hidden_size);
    EXPECT_EQ(c.model_type, "gemma3_text");
    EXPECT_TRUE(c.qk_norm && c.norm_unit_offset && c.post_norms && c.scale_embeddings);
    EXPECT_EQ(c.hidden_activation, slm::Activation::GeluTanh);
    EXPECT_TRUE(c.tie_word_embeddings);  // Gemma's default: config.json leaves it out
    EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
    EXPECT_DOUBLE_EQ(c.rope_local_theta, 10000);
    EXPECT_EQ(c.attn_logit_softcapping, 0);
    EXPECT_EQ(c.final_logit_softcapping, 0);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_EQ(c.layer_window(l), (l + 1) % 6 ? 512 : 0) << l;
    EXPECT_FLOAT_EQ(c.attention_scale(), 1.0f / 16);
  }
  // The published parameter counts (tied embeddings).
  EXPECT_EQ(ModelConfig::from_json(kGemma3_270m, "a").parameter_count(), 268098176);
  EXPECT_EQ(ModelConfig::from_json(kGemma3_1b, "a").parameter_count(), 999885952);
  // sqrt(1152) = 33.94 rounds to 34 in bf16, as transformers casts it.
  EXPECT_EQ(ModelConfig::from_json(kGemma3_1b, "a").embedding_scale(), 34.0f);
}

TEST(ModelConfig, Gemma2SoftCapsAndEvenLayersSlide) {
  const ModelConfig c = ModelConfig::from_json(kGemma2_2b, "gemma2/config.json");
  EXPECT_FALSE(c.qk_norm);
  EXPECT_TRUE(c.norm_unit_offset && c.post_norms && c.scale_embeddings);
  EXPECT_DOUBLE_EQ(c.attn_logit_softcapping, 50);
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 30);
  EXPECT_EQ(c.rope_local_theta, 0);
  EXPECT_EQ(c.layer_window(0), 4096);
  EXPECT_EQ(c.layer_window(1), 0);
  EXPECT_EQ(c.layer_window(24), 4096);
  EXPECT_EQ(c.parameter_count(), 2614341888);  // Gemma 2 2B
  EXPECT_FLOAT_EQ(c.embedding_scale(), std::sqrt(2304.0f));  // f32 checkpoint: not rounded
  json j = json::parse(kGemma2_2b);
  j["attn_logit_softcapping"] = nullptr;  // null turns a cap off; leaving it out keeps the default
  j.erase("final_logit_softcapping");
  EXPECT_EQ(parse(j).attn_logit_softcapping, 0);
  EXPECT_DOUBLE_EQ(parse(j).final_logit_softcapping, 30);
  j["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_TRUE(Rejects(j, {"layer_types", "one entry per layer"}));
  j["layer_types"] = json::array();
  for (int l = 0; l < 26; ++l) j["layer_types"].push_back(l == 3 ? "chunked_attention" : "full_attention");
  EXPECT_TRUE(Rejects(j, {"layer_types", "chunked_attention"}));
}

// microsoft/Phi-3-mini-4k-instruct's config.json.
constexpr const char* kPhi3Mini4k = R"({
  "architectures": ["Phi3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
  "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
  "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
  "sliding_window": 2047, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 32064})";

TEST(ModelConfig, Phi3ReadsAsTransformersDoes) {
  const ModelConfig c = ModelConfig::from_json(kPhi3Mini4k, "phi3/config.json");
  EXPECT_TRUE(c.fused_projections);
  EXPECT_FALSE(c.attention_bias || c.output_bias || c.qk_norm || c.tie_word_embeddings);
  EXPECT_EQ(c.layer_window(0), 2047);
  EXPECT_EQ(c.layer_window(31), 2047);
  EXPECT_EQ(c.parameter_count(), 3821079552);  // "3.8B"
  const ModelConfig preset = ModelConfig::from_json(slm::shape_preset("phi3-mini").to_json(), "preset");
  EXPECT_EQ(preset.parameter_count(), c.parameter_count());
  EXPECT_EQ(preset.sliding_window, c.sliding_window);
  EXPECT_EQ(preset.rope_original_max_position_embeddings, 4096);
  json j = json::parse(kPhi3Mini4k);
  j.erase("rms_norm_eps");
  EXPECT_DOUBLE_EQ(parse(j).rms_norm_eps, 1e-5);  // Phi3Config's default
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse(j).layer_window(0), 0);
  j["partial_rotary_factor"] = 0.75;  // Phi-4-mini
  EXPECT_TRUE(Rejects(j, {"partial_rotary_factor", "not supported"}));
  j.erase("partial_rotary_factor");
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_TRUE(Rejects(j, {"rope_scaling of phi3 must be longrope or null"}));
}

// `slm create --shape` presets are the published configs: the same fields,
// read back through config.json, as the real files give.
TEST(ModelConfig, GemmaPresetsMatchThePublishedConfigs) {
  for (const auto& [preset, text] : {std::pair{"gemma3-270m", kGemma3_270m}, std::pair{"gemma3-1b", kGemma3_1b},
                                     std::pair{"gemma2-2b", kGemma2_2b}}) {
    SCOPED_TRACE(preset);
    const ModelConfig real = ModelConfig::from_json(text, "real");
    const ModelConfig made = ModelConfig::from_json(slm::shape_preset(preset).to_json(), "preset");
    EXPECT_EQ(made.parameter_count(), real.parameter_count());
    EXPECT_EQ(made.head_dim, real.head_dim);
    EXPECT_EQ(made.sliding_layers, real.sliding_layers);
    EXPECT_EQ(made.sliding_window, real.sliding_window);
    EXPECT_EQ(made.rope_theta, real.rope_theta);
    EXPECT_EQ(made.rope_local_theta, real.rope_local_theta);
    EXPECT_EQ(made.query_pre_attn_scalar, real.query_pre_attn_scalar);
    EXPECT_EQ(made.attn_logit_softcapping, real.attn_logit_softcapping);
    EXPECT_EQ(made.final_logit_softcapping, real.final_logit_softcapping);
    EXPECT_EQ(made.max_position_embeddings, real.max_position_embeddings);
    EXPECT_EQ(made.eos_token_ids, real.eos_token_ids);
    EXPECT_EQ(made.tie_word_embeddings, real.tie_word_embeddings);
  }
}

TEST(ModelConfig, GemmaUnsupportedOptionsNameTheField) {
  json j = json::parse(kGemma3_1b);
  j["hidden_activation"] = "gelu";
  EXPECT_TRUE(Rejects(j, {"hidden_activation", "\"gelu\""}));
  j = json::parse(kGemma3_1b);
  j["use_bidirectional_attention"] = true;
  EXPECT_TRUE(Rejects(j, {"use_bidirectional_attention"}));
  j = json::parse(kGemma3_1b);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 8.0}};
  EXPECT_TRUE(Rejects(j, {"rope_scaling", "\"yarn\""}));
  j = json::parse(kGemma3_1b);
  j["query_pre_attn_scalar"] = -1;
  EXPECT_TRUE(Rejects(j, {"query_pre_attn_scalar"}));
}

// Qwen2's rule (transformers Qwen2Attention): with use_sliding_window, layers
// at index >= max_window_layers slide; the ones below keep full attention.
TEST(ModelConfig, QwenMaxWindowLayers) {
  json j = json::parse(kQwen25);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  j["max_window_layers"] = 21;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.sliding_window, 4096);
  for (int64_t l = 0; l < 21; ++l) EXPECT_EQ(c.layer_window(l), 0) << l;
  for (int64_t l = 21; l < 24; ++l) EXPECT_EQ(c.layer_window(l), 4096) << l;
  j["max_window_layers"] = 0;  // every layer slides
  EXPECT_EQ(parse(j).layer_window(0), 4096);
  j.erase("max_window_layers");  // defaults to every layer: none slides
  EXPECT_EQ(parse(j).layer_window(23), 0);
  j["model_type"] = "qwen3";
  j["max_window_layers"] = 2;
  const ModelConfig q3 = parse(j);
  EXPECT_EQ(q3.layer_window(1), 0);
  EXPECT_EQ(q3.layer_window(2), 4096);
}

TEST(ModelConfig, DefaultsWhenOptionalFieldsAreAbsent) {
  const ModelConfig c = parse(base());
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.eos_token_ids.empty());
  json no_kv = base();
  no_kv.erase("num_key_value_heads");
  EXPECT_EQ(parse(no_kv).num_key_value_heads, 4);  // multi-head attention
  json bias = base();
  bias["attention_bias"] = true;
  EXPECT_TRUE(parse(bias).attention_bias);
}

TEST(ModelConfig, ToJsonReadsBackToTheSameConfig) {
  for (const char* text : {kSmolLM2, kQwen25, kLlama32, kMistral, kQwen3, kGemma3_270m, kGemma3_1b, kGemma2_2b}) {
    const ModelConfig a = ModelConfig::from_json(text, "a");
    const ModelConfig b = ModelConfig::from_json(a.to_json(), "b");
    SCOPED_TRACE(a.model_type);
    EXPECT_EQ(b.model_type, a.model_type);
    EXPECT_EQ(b.hidden_size, a.hidden_size);
    EXPECT_EQ(b.head_dim, a.head_dim);
    EXPECT_EQ(b.num_key_value_heads, a.num_key_value_heads);
    EXPECT_EQ(b.rope_scaling, a.rope_scaling);
    EXPECT_DOUBLE_EQ(b.rope_factor, a.rope_factor);
    EXPECT_EQ(b.sliding_window, a.sliding_window);
    EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
    EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
    EXPECT_EQ(b.torch_dtype, a.torch_dtype);
    EXPECT_EQ(b.parameter_count(), a.parameter_count());
    EXPECT_EQ(b.sliding_layers, a.sliding_layers);
    EXPECT_EQ(b.rope_local_theta, a.rope_local_theta);
    EXPECT_EQ(b.hidden_activation, a.hidden_activation);
    EXPECT_EQ(b.attn_logit_softcapping, a.attn_logit_softcapping);
    EXPECT_EQ(b.final_logit_softcapping, a.final_logit_softcapping);
    EXPECT_EQ(b.query_pre_attn_scalar, a.query_pre_attn_scalar);
  }
}

TEST(ModelConfig, UnknownOrMissingModelType) {
  json j = base();
  j["model_type"] = "gpt2";
  EXPECT_TRUE(Rejects(j, {"model_type", "\"gpt2\"", "llama"}));
  j.erase("model_type");
  EXPECT_TRUE(Rejects(j, {"model_type"}));
  j["model_type"] = 7;
  EXPECT_TRUE(Rejects(j, {"model_type"}));
}

TEST(ModelConfig, ZeroNegativeAndAbsurdSizes) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "vocab_size", "max_position_embeddings"}) {
    for (const json& value : {json(0), json(-1), json(1000000000000LL), json(9223372036854775807LL),
                              json(18446744073709551615ULL)}) {
      json j = base();
      j[field] = value;
      EXPECT_TRUE(Rejects(j, {field})) << field << " = " << value.dump();
    }
    json j = base();
    j[field] = 1.5;
    EXPECT_TRUE(Rejects(j, {field, "integer"})) << field;
    j[field] = "64";
    EXPECT_TRUE(Rejects(j, {field})) << field;
  }
  json j = base();
  j.erase("hidden_size");
  EXPECT_TRUE(Rejects(j, {"hidden_size", "missing"}));
  j = base();
  j["head_dim"] = 0;
  EXPECT_TRUE(Rejects(j, {"head_dim"}));
  j["head_dim"] = 7;
  EXPECT_TRUE(Rejects(j, {"head_dim", "even"}));
  j = base();
  j["rms_norm_eps"] = -1e-6;
  EXPECT_TRUE(Rejects(j, {"rms_norm_eps"}));
  j = base();
  j["rope_theta"] = 0;
  EXPECT_TRUE(Rejects(j, {"rope_theta"}));
}

// Found by fuzz_config: a head_dim derived from hidden_size / heads escaped the
// bounds an explicit head_dim has, so to_json() wrote a config that did not read back.
TEST(ModelConfig, DerivedHeadDimHasTheSameBounds) {
  json j = base();
  j["hidden_size"] = 4096;
  j["num_attention_heads"] = 2;
  j["num_key_value_heads"] = 1;
  EXPECT_TRUE(Rejects(j, {"hidden_size / num_attention_heads", "2048"}));
  j["head_dim"] = 128;  // explicit and in range: fine
  EXPECT_EQ(parse(j).head_dim, 128);
  j = base();
  j["hidden_size"] = 4;
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 4;
  EXPECT_TRUE(Rejects(j, {"hidden_size / num_attention_heads"}));  // head_dim 1
}

TEST(ModelConfig, TorchDtype) {
  json j = base();
  j["torch_dtype"] = "bfloat16";
  EXPECT_EQ(parse(j).torch_dtype, slm::DType::BF16);
  j.erase("torch_dtype");
  j["dtype"] = "float16";  // the newer key
  EXPECT_EQ(parse(j).torch_dtype, slm::DType::F16);
  // slm's in-memory formats are not checkpoint dtypes: ignored, and never
  // indexed past the names to_json() writes.
  j["dtype"] = "q8";
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.torch_dtype, slm::DType::F32);
  EXPECT_NE(c.to_json().find("\"float32\""), std::string::npos);
}

TEST(ModelConfig, HeadsMustBeAMultipleOfKvHeads) {
  json j = base();
  j["num_attention_heads"] = 9;
  j["hidden_size"] = 576;
  j["num_key_value_heads"] = 2;
  EXPECT_TRUE(Rejects(j, {"num_attention_heads", "num_key_value_heads", "9", "2"}));
  j = base();
  j["num_attention_heads"] = 5;  // 64 / 5 is not whole and head_dim is absent
  j["num_key_value_heads"] = 5;
  EXPECT_TRUE(Rejects(j, {"hidden_size", "num_attention_heads"}));
  j["head_dim"] = 16;  // with an explicit head_dim it is allowed
  EXPECT_EQ(parse(j).head_dim, 16);
}

TEST(ModelConfig, RopeScaling) {
  json j = base();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};  // the older key
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling, RopeScaling::Linear);
  EXPECT_DOUBLE_EQ(c.rope_factor, 4.0);
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_DOUBLE_EQ(parse(j).rope_factor, 2.0);
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse(j).rope_scaling, RopeScaling::None);
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 2.0},
                       {"high_freq_factor", 6.0}, {"original_max_position_embeddings", 4096}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling, RopeScaling::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_low_freq_factor, 2.0);
  EXPECT_DOUBLE_EQ(c.rope_high_freq_factor, 6.0);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 4096);
  for (const char* type : {"yarn", "dynamic", "su"}) {
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    EXPECT_TRUE(Rejects(j, {"unsupported rope_scaling type", std::string("\"") + type + "\""})) << type;
  }
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_TRUE(Rejects(j, {"unsupported rope_scaling type \"yarn\""}));
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0}};
  EXPECT_TRUE(Rejects(j, {"high_freq_factor"}));
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", -2.0}};
  EXPECT_TRUE(Rejects(j, {"factor"}));
  j["rope_scaling"] = "linear";
  EXPECT_TRUE(Rejects(j, {"rope_scaling"}));
}

// longrope as transformers reads it: factor lists of head_dim/2, the factor
// max/original when config.json has original_max_position_embeddings (else
// rope_scaling's), the attention factor implied by it unless given; written
// back to the same config.
TEST(ModelConfig, LongRope) {
  json j = base();
  const int64_t half = parse(j).head_dim / 2;
  const std::vector<double> short_factors(static_cast<size_t>(half), 1.5), long_factors(static_cast<size_t>(half), 4.0);
  j["max_position_embeddings"] = 131072;
  j["original_max_position_embeddings"] = 4096;
  j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", short_factors}, {"long_factor", long_factors}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling, RopeScaling::LongRope);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rope_factor, 32.0);
  EXPECT_NEAR(c.rope_attention_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)), 1e-12);
  EXPECT_EQ(c.rope_long_factor, std::vector<float>(static_cast<size_t>(half), 4.0f));
  const ModelConfig again = ModelConfig::from_json(c.to_json(), "written");
  EXPECT_EQ(again.rope_short_factor, c.rope_short_factor);
  EXPECT_DOUBLE_EQ(again.rope_attention_factor, c.rope_attention_factor);

  j["rope_scaling"]["attention_factor"] = 1.25;
  EXPECT_DOUBLE_EQ(parse(j).rope_attention_factor, 1.25);
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(parse(j).to_json(), "written").rope_attention_factor, 1.25);
  j.erase("original_max_position_embeddings");  // then rope_scaling's factor, over max_position_embeddings
  j["rope_scaling"].erase("attention_factor");
  j["rope_scaling"]["factor"] = 4.0;
  c = parse(j);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 131072);
  EXPECT_NEAR(c.rope_attention_factor, std::sqrt(1 + std::log(4.0) / std::log(131072.0)), 1e-12);
  EXPECT_NEAR(ModelConfig::from_json(c.to_json(), "written").rope_attention_factor, c.rope_attention_factor, 1e-12);

  j["rope_scaling"]["long_factor"] = std::vector<double>(3, 1.0);
  EXPECT_TRUE(Rejects(j, {"long_factor", "must list " + std::to_string(half) + " numbers"}));
  j["rope_scaling"]["long_factor"] = long_factors;
  j["rope_scaling"].erase("short_factor");
  EXPECT_TRUE(Rejects(j, {"missing field \"short_factor\""}));
  j["rope_scaling"]["short_factor"] = std::vector<double>(static_cast<size_t>(half), -1.0);
  EXPECT_TRUE(Rejects(j, {"short_factor", "positive"}));
}

TEST(ModelConfig, TokenIdsAsNumberOrList) {
  json j = base();
  j["eos_token_id"] = 2;
  EXPECT_EQ(parse(j).eos_token_ids, std::vector<int32_t>{2});
  j["eos_token_id"] = {2, 7, 9};
  EXPECT_EQ(parse(j).eos_token_ids, (std::vector<int32_t>{2, 7, 9}));
  j["eos_token_id"] = nullptr;
  EXPECT_TRUE(parse(j).eos_token_ids.empty());
  j["eos_token_id"] = json::array();
  EXPECT_TRUE(parse(j).eos_token_ids.empty());
  for (const json& bad : {json("2"), json(-1), json(1.5), json({1, "x"}), json(4294967296LL)}) {
    j["eos_token_id"] = bad;
    EXPECT_TRUE(Rejects(j, {"eos_token_id"})) << bad.dump();
  }
}

TEST(ModelConfig, NotJsonOrNotAnObject) {
  EXPECT_TRUE(ThrowsErrorWith([] { ModelConfig::from_json("{\"model_type\": ", "x/config.json"); },
                              {"x/config.json", "not valid JSON"}));
  EXPECT_TRUE(ThrowsErrorWith([] { ModelConfig::from_json("", "x/config.json"); }, {"x/config.json"}));
  EXPECT_TRUE(ThrowsErrorWith([] { ModelConfig::from_json("[1]", "x/config.json"); }, {"x/config.json", "object"}));
  EXPECT_TRUE(ThrowsErrorWith([] { ModelConfig::from_file("/nonexistent/dir/config.json"); },
                              {"/nonexistent/dir/config.json"}));
  json j = base();
  j["hidden_act"] = "gelu";
  EXPECT_TRUE(Rejects(j, {"hidden_act", "gelu"}));
  j = base();
  j["tie_word_embeddings"] = "yes";
  EXPECT_TRUE(Rejects(j, {"tie_word_embeddings"}));
}

class GenerationConfig : public slm::test::TempDirTest {};

TEST_F(GenerationConfig, ReadsSamplingDefaultsAndEos) {
  const auto path = write("generation_config.json",
                          R"({"bos_token_id": 1, "do_sample": true, "eos_token_id": [128001, 128009],
                              "temperature": 0.6, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1})");
  const slm::GenerationDefaults g = slm::GenerationDefaults::from_file(path);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{128001, 128009}));
  EXPECT_EQ(g.do_sample, true);
  EXPECT_DOUBLE_EQ(*g.temperature, 0.6);
  EXPECT_DOUBLE_EQ(*g.top_p, 0.9);
  EXPECT_EQ(*g.top_k, 40);
  EXPECT_DOUBLE_EQ(*g.repetition_penalty, 1.1);
  EXPECT_FALSE(g.min_p.has_value());
}

TEST_F(GenerationConfig, BadValuesNameTheFileAndField) {
  const auto path = write("generation_config.json", R"({"top_p": 1.5})");
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::GenerationDefaults::from_file(path); }, {"generation_config.json", "top_p"}));
  write("generation_config.json", "{");
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::GenerationDefaults::from_file(path); }, {"generation_config.json", "JSON"}));
}

}  // namespace
