// slm info: what a model folder holds.
#include "commands.h"
#include "common.h"

#include <slm/error.h>

#include <nlohmann/json.hpp>

#include <iostream>

namespace slm::cli {

int run_info(int argc, char** argv) {
  CLI::App app{"Describe a model folder.", "info"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  std::string output_format = "text";
  app.add_option("--output-format", output_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  return run_command(app, argc, argv, [&] {
    const Model model = load_model(model_options);
    const ModelConfig& c = model.config();
    nlohmann::json j;
    j["model_type"] = c.model_type;
    j["parameters"] = c.parameter_count();
    j["dtype"] = dtype_name(model.dtype());
    j["weight_bytes"] = model.weight_bytes();
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
    const auto tokenizer_path = std::filesystem::path(model_options.dir) / "tokenizer.json";
    if (std::filesystem::exists(tokenizer_path)) {
      const Tokenizer tokenizer = Tokenizer::from_dir(model_options.dir);
      j["tokenizer"] = {{"kind", tokenizer.kind()}, {"vocab_size", tokenizer.vocab_size()}};
      nlohmann::json specials = nlohmann::json::array();
      for (int32_t id : tokenizer.special_ids()) specials.push_back({{"id", id}, {"token", tokenizer.id_to_token(id).value_or("")}});
      j["tokenizer"]["special_tokens"] = specials;
    } else {
      j["tokenizer"] = nullptr;
    }
    if (output_format == "json") {
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    std::printf("architecture     %s\n", c.model_type.c_str());
    std::printf("parameters       %.2f M\n", static_cast<double>(c.parameter_count()) / 1e6);
    std::printf("weights          %s, %.1f MiB in memory\n", dtype_name(model.dtype()).data(),
                static_cast<double>(model.weight_bytes()) / (1 << 20));
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
    }
    return 0;
  });
}

}  // namespace slm::cli
