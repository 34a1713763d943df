// slm create: a randomly initialised model folder in Hugging Face layout.
#include "commands.h"
#include "common.h"

#include <slm/error.h>

#include <iostream>

namespace slm::cli {

namespace {

void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    const auto source = from / name;
    if (!std::filesystem::exists(source)) continue;
    std::error_code ec;
    const auto temp = to / (std::string(name) + ".tmp");
    std::filesystem::copy_file(source, temp, std::filesystem::copy_options::overwrite_existing, ec);
    if (!ec) std::filesystem::rename(temp, to / name, ec);
    if (ec) fail(source.string(), ": cannot copy into ", to.string(), ": ", ec.message());
  }
}

}  // namespace

int run_create(int argc, char** argv) {
  CLI::App app{"Write a randomly initialised model folder (config.json, model.safetensors, tokenizer files).", "create"};
  std::string arch, shape, tokenizer_dir, out, dtype = "f32", rope_scaling;
  ModelConfig c;
  CreateOptions options;
  int64_t max_position = 0;
  bool tie = false, bias = false;
  int64_t sliding_pattern = 0;
  app.add_option("--arch", arch, "llama, mistral, qwen2, qwen3, gemma2, gemma3_text or phi3")
      ->check(CLI::IsMember({"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"}));
  app.add_option("--shape", shape, "a named shape: " + [] {
    std::string names;
    for (const auto& n : shape_preset_names()) names += (names.empty() ? "" : ", ") + n;
    return names;
  }());
  app.add_option("--hidden", c.hidden_size, "hidden size");
  app.add_option("--layers", c.num_hidden_layers, "decoder layers");
  app.add_option("--heads", c.num_attention_heads, "attention heads");
  app.add_option("--kv-heads", c.num_key_value_heads, "key/value heads (default: --heads)");
  app.add_option("--head-dim", c.head_dim, "head dimension (default: hidden / heads)");
  app.add_option("--intermediate", c.intermediate_size, "MLP size");
  app.add_option("--vocab", c.vocab_size, "vocabulary size (default: the tokenizer's)");
  app.add_flag("--tie-embeddings", tie, "lm_head shares the embedding matrix");
  app.add_flag("--attention-bias", bias, "q/k/v projections have biases (always on for qwen2)");
  app.add_option("--sliding-window", c.sliding_window, "attention window (mistral; qwen2/3 use_sliding_window)");
  app.add_option("--sliding-pattern", sliding_pattern,
                 "Gemma: every Nth layer has full attention, the others the sliding window")
      ->check(CLI::PositiveNumber);
  app.add_option("--rope-theta", c.rope_theta, "RoPE base");
  app.add_option("--rope-local-theta", c.rope_local_theta, "RoPE base of the sliding layers (gemma3_text)");
  app.add_option("--query-pre-attn-scalar", c.query_pre_attn_scalar,
                 "Gemma: attention scores scaled by its -1/2 power (default 256)");
  app.add_option("--attn-softcap", c.attn_logit_softcapping, "attention-logit soft cap (0: none; gemma2 default 50)");
  app.add_option("--final-softcap", c.final_logit_softcapping, "final-logit soft cap (0: none; gemma2 default 30)");
  app.add_option("--rope-scaling", rope_scaling, "linear, llama3 or longrope")
      ->check(CLI::IsMember({"linear", "llama3", "longrope"}));
  app.add_option("--rope-factor", c.rope_factor, "rope_scaling factor");
  app.add_option("--rope-low-freq-factor", c.rope_low_freq_factor, "llama3 rope_scaling low_freq_factor");
  app.add_option("--rope-high-freq-factor", c.rope_high_freq_factor, "llama3 rope_scaling high_freq_factor");
  app.add_option("--rope-original-max-position", c.rope_original_max_position_embeddings,
                 "llama3 and longrope: the pretrained context (original_max_position_embeddings)");
  app.add_option("--rope-short-factor", c.rope_short_factor,
                 "longrope: head_dim/2 comma-separated divisors for sequences within the original context")
      ->delimiter(',');
  app.add_option("--rope-long-factor", c.rope_long_factor, "longrope: the divisors for sequences reaching past it")
      ->delimiter(',');
  app.add_option("--rope-attention-factor", c.rope_attention_factor,
                 "longrope: what cos and sin are multiplied by (default: implied by the two context lengths)");
  app.add_option("--max-position", max_position, "context length (max_position_embeddings)");
  app.add_option("--init-std", options.init_std, "standard deviation of the random weights");
  app.add_option("--shards", options.shards, "write the weights as this many shards plus an index");
  app.add_option("--tokenizer", tokenizer_dir, "copy tokenizer.json / tokenizer_config.json from this folder");
  app.add_option("--dtype", dtype, "f32, f16 or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  app.add_option("--seed", options.seed, "random seed");
  app.add_option("--out", out, "output folder")->required();

  return run_command(app, argc, argv, [&] {
    ModelConfig config;
    if (!shape.empty()) {
      config = shape_preset(shape);
    } else {
      if (arch.empty()) fail("give --arch (with explicit sizes) or --shape NAME");
      for (const char* required : {"--hidden", "--layers", "--heads", "--intermediate"}) {
        if (app.count(required) == 0) fail(required, " is required when --shape is not given");
      }
      config.rope_theta = 10000;
      config.max_position_embeddings = 2048;
    }
    if (!arch.empty()) config.model_type = arch;
    if (app.count("--hidden")) config.hidden_size = c.hidden_size;
    if (app.count("--layers")) config.num_hidden_layers = c.num_hidden_layers;
    if (app.count("--heads")) config.num_attention_heads = c.num_attention_heads;
    config.num_key_value_heads = app.count("--kv-heads") ? c.num_key_value_heads
                                 : config.num_key_value_heads > 0 ? config.num_key_value_heads
                                                                  : config.num_attention_heads;
    if (app.count("--intermediate")) config.intermediate_size = c.intermediate_size;
    if (app.count("--head-dim")) {
      config.head_dim = c.head_dim;
    } else if (config.num_attention_heads > 0 && (shape.empty() || app.count("--hidden") || app.count("--heads"))) {
      // A named shape keeps its own head_dim (Gemma's 256 is not hidden / heads) unless its sizes change.
      config.head_dim = config.hidden_size / config.num_attention_heads;
    }
    if (tie) config.tie_word_embeddings = true;
    config.set_family_options(bias);
    if (app.count("--sliding-window")) {
      config.sliding_window = c.sliding_window;
      config.max_window_layers = 0;
    }
    if (config.sliding_layers.size() != static_cast<size_t>(config.num_hidden_layers)) config.sliding_layers.clear();
    if (sliding_pattern > 0) {
      config.sliding_layers.clear();
      for (int64_t l = 0; l < config.num_hidden_layers; ++l) config.sliding_layers.push_back((l + 1) % sliding_pattern != 0);
    }
    if (app.count("--rope-theta")) config.rope_theta = c.rope_theta;
    if (app.count("--rope-local-theta")) config.rope_local_theta = c.rope_local_theta;
    if (app.count("--query-pre-attn-scalar")) config.query_pre_attn_scalar = c.query_pre_attn_scalar;
    if (app.count("--attn-softcap")) config.attn_logit_softcapping = c.attn_logit_softcapping;
    if (app.count("--final-softcap")) config.final_logit_softcapping = c.final_logit_softcapping;
    if (max_position > 0) config.max_position_embeddings = max_position;
    if (rope_scaling == "longrope") {
      config.rope_scaling = RopeScaling::LongRope;
      config.rope_short_factor = c.rope_short_factor;
      config.rope_long_factor = c.rope_long_factor;
      config.rope_original_max_position_embeddings =
          app.count("--rope-original-max-position") ? c.rope_original_max_position_embeddings : 4096;
      config.rope_attention_factor =
          app.count("--rope-attention-factor")
              ? c.rope_attention_factor
              : longrope_attention_factor(static_cast<double>(config.max_position_embeddings) /
                                              static_cast<double>(config.rope_original_max_position_embeddings),
                                          config.rope_original_max_position_embeddings);
    } else if (!rope_scaling.empty()) {
      config.rope_scaling = rope_scaling == "linear" ? RopeScaling::Linear : RopeScaling::Llama3;
      config.rope_factor = app.count("--rope-factor") ? c.rope_factor : (rope_scaling == "linear" ? 2.0 : 8.0);
      config.rope_low_freq_factor = c.rope_low_freq_factor;
      config.rope_high_freq_factor = c.rope_high_freq_factor;
      config.rope_original_max_position_embeddings =
          app.count("--rope-original-max-position") ? c.rope_original_max_position_embeddings : 8192;
    }
    if (!tokenizer_dir.empty()) {
      const Tokenizer tokenizer = load_tokenizer(tokenizer_dir);
      if (app.count("--vocab") == 0 && shape.empty()) config.vocab_size = tokenizer.vocab_size();
      if (tokenizer.vocab_size() > (app.count("--vocab") ? c.vocab_size : config.vocab_size)) {
        fail("--tokenizer ", tokenizer_dir, " has ", tokenizer.vocab_size(), " tokens, more than the model's vocabulary of ",
             app.count("--vocab") ? c.vocab_size : config.vocab_size);
      }
      if (tokenizer.bos_id()) config.bos_token_ids = {*tokenizer.bos_id()};
      if (tokenizer.eos_id()) config.eos_token_ids = {*tokenizer.eos_id()};
    }
    if (app.count("--vocab")) config.vocab_size = c.vocab_size;
    if (config.vocab_size <= 0) fail("--vocab is required when neither --shape nor --tokenizer gives it");
    options.dtype = *parse_dtype(dtype);
    // Validate exactly as loading will, before anything is written.
    config = ModelConfig::from_json(config.to_json(), "the requested model");
    // The weights are made in memory, then written: both must have room.
    const double bytes = static_cast<double>(config.parameter_count()) * static_cast<double>(dtype_bytes(options.dtype, 1));
    const std::string what = "a model of " + std::to_string(config.parameter_count()) + " parameters";
    check_memory(what, bytes);
    check_disk(what, out, bytes);
    create_random_model(config, options, out);
    if (!tokenizer_dir.empty()) copy_tokenizer_files(tokenizer_dir, out);
    std::fprintf(stderr, "wrote %s: %s, %.2f M parameters, %s\n", out.c_str(), config.model_type.c_str(),
                 static_cast<double>(config.parameter_count()) / 1e6, dtype.c_str());
    return 0;
  });
}

}  // namespace slm::cli
