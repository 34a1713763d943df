// slm info: what a model folder holds.
#include "commands.h"
#include "common.h"
#include "model/device_map.h"

#include <slm/error.h>

#include <nlohmann/json.hpp>

#include <iostream>

namespace slm::cli {

namespace {

// An adapter folder: what adapter_config.json says it is.
int describe_adapter(const std::filesystem::path& dir, const std::string& output_format) {
  const std::string path = (dir / "adapter_config.json").string();
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!config.is_object()) fail(path, ": expected a JSON object");
  nlohmann::json j = {{"path", std::filesystem::absolute(dir).lexically_normal().string()}, {"kind", "adapter"}};
  for (const char* key : {"peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "base_model_name_or_path"}) {
    j[key] = config.contains(key) ? config[key] : nlohmann::json(nullptr);
  }
  if (output_format == "json") {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("adapter          %s (%s)\n", j["path"].get<std::string>().c_str(), j["peft_type"].dump().c_str());
  std::printf("rank, alpha      %s, %s\n", j["r"].dump().c_str(), j["lora_alpha"].dump().c_str());
  std::printf("modules          %s\n", j["target_modules"].dump().c_str());
  std::printf("base model       %s\n", j["base_model_name_or_path"].dump().c_str());
  return 0;
}

}  // namespace

int run_info(int argc, char** argv) {
  CLI::App app{"Describe a model folder (or a LoRA adapter folder).", "info"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  std::string output_format = "text";
  bool tensors = false;
  app.add_option("--output-format", output_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  app.add_flag("--tensors", tensors, "also list every weight: name, dtype in memory (as --dtype loads it) and shape");
  return run_command(app, argc, argv, [&] {
    const std::filesystem::path dir(model_options.dir);
    if (!std::filesystem::exists(dir / "config.json") && std::filesystem::exists(dir / "adapter_config.json")) {
      return describe_adapter(dir, output_format);
    }
    const Model model = load_model(model_options);
    const ModelConfig& c = model.config();
    nlohmann::json j;
    j["path"] = std::filesystem::absolute(dir).lexically_normal().string();
    j["model_type"] = c.model_type;
    j["parameters"] = c.parameter_count();
    j["dtype"] = dtype_name(model.dtype());
    j["weight_bytes"] = model.weight_bytes();
    j["placement"] = check_placement(load_options(model_options), c.num_hidden_layers).describe();
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["layers"] = c.num_hidden_layers;
    j["attention_heads"] = c.num_attention_heads;
    j["kv_heads"] = c.num_key_value_heads;
    j["head_dim"] = c.head_dim;
    j["vocab_size"] = c.vocab_size;
    j["context_length"] = c.max_position_embeddings;
    j["tied_embeddings"] = c.tie_word_embeddings;
    j["sliding_window"] = c.sliding_window;
    j["kv_cache_bytes_per_token"] = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4;
    j["bos_token_ids"] = c.bos_token_ids;
    const GenerateOptions resolved = resolve_generate_options(app, GenerationFlags{}, model, model_options);
    j["eos_token_ids"] = resolved.eos_ids;
    const SamplingParams& defaults = resolved.sampling;
    j["generation_defaults"] = {{"temperature", defaults.temperature}, {"top_k", defaults.top_k},
                                {"top_p", defaults.top_p}, {"min_p", defaults.min_p},
                                {"repetition_penalty", defaults.repetition_penalty}};
    if (tensors) {
      j["tensors"] = nlohmann::json::array();
      for (const auto& [name, t] : named_weights(model.weights(), c)) {
        j["tensors"].push_back({{"name", name}, {"dtype", dtype_name(t->dtype())}, {"shape", t->shape()}});
      }
    }
    const auto tokenizer_path = std::filesystem::path(model_options.dir) / "tokenizer.json";
    if (std::filesystem::exists(tokenizer_path) || std::filesystem::is_regular_file(dir)) {
      const Tokenizer tokenizer = load_tokenizer(model_options.dir);
      j["tokenizer"] = {{"kind", tokenizer.kind()}, {"vocab_size", tokenizer.vocab_size()}};
      nlohmann::json specials = nlohmann::json::array();
      for (int32_t id : tokenizer.special_ids()) specials.push_back({{"id", id}, {"token", tokenizer.id_to_token(id).value_or("")}});
      j["tokenizer"]["special_tokens"] = specials;
      j["tokenizer"]["chat_template"] = !tokenizer.chat_template().empty();
    } else {
      j["tokenizer"] = nullptr;
    }
    if (output_format == "json") {
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    std::printf("model            %s\n", j["path"].get<std::string>().c_str());
    std::printf("architecture     %s\n", c.model_type.c_str());
    std::printf("parameters       %.2f M\n", static_cast<double>(c.parameter_count()) / 1e6);
    std::printf("weights          %s, %.1f MiB in memory\n", dtype_name(model.dtype()).data(),
                static_cast<double>(model.weight_bytes()) / (1 << 20));
    std::printf("devices          %s\n", j["placement"].get<std::string>().c_str());
    std::printf("layers           %lld (hidden %lld, MLP %lld)\n", static_cast<long long>(c.num_hidden_layers),
                static_cast<long long>(c.hidden_size), static_cast<long long>(c.intermediate_size));
    std::printf("attention        %lld heads, %lld KV heads, head_dim %lld%s%s%s\n",
                static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.num_key_value_heads),
                static_cast<long long>(c.head_dim), c.attention_bias ? ", q/k/v bias" : "",
                c.qk_norm ? ", q/k norm" : "", c.sliding_window ? ", sliding window" : "");
    std::printf("context          %lld tokens (KV cache %.1f KiB per token in f32)\n",
                static_cast<long long>(c.max_position_embeddings),
                static_cast<double>(j["kv_cache_bytes_per_token"].get<int64_t>()) / 1024);
    std::printf("vocabulary       %lld%s\n", static_cast<long long>(c.vocab_size),
                c.tie_word_embeddings ? " (lm_head tied to embeddings)" : "");
    if (j["tokenizer"].is_null()) {
      std::printf("tokenizer        none (no tokenizer.json)\n");
    } else {
      std::printf("tokenizer        %s, %d tokens\n", j["tokenizer"]["kind"].get<std::string>().c_str(),
                  j["tokenizer"]["vocab_size"].get<int>());
      std::string specials;
      for (const auto& s : j["tokenizer"]["special_tokens"]) {
        specials += (specials.empty() ? "" : " ") + s["token"].get<std::string>() + "=" + std::to_string(s["id"].get<int>());
      }
      std::printf("special tokens   %s\n", specials.c_str());
      std::printf("chat template    %s\n", j["tokenizer"]["chat_template"].get<bool>() ? "yes" : "none");
    }
    std::printf("BOS / EOS ids    %s / %s\n", j["bos_token_ids"].dump().c_str(), j["eos_token_ids"].dump().c_str());
    std::printf("sampling         temperature %g, top_k %lld, top_p %g, min_p %g, repetition_penalty %g "
                "(generation_config.json, else greedy)\n",
                defaults.temperature, static_cast<long long>(defaults.top_k), defaults.top_p, defaults.min_p,
                defaults.repetition_penalty);
    if (tensors) {
      for (const auto& t : j["tensors"]) {
        std::printf("  %-60s %-5s %s\n", t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(),
                    t["shape"].dump().c_str());
      }
    }
    return 0;
  });
}

}  // namespace slm::cli
