// slm generate: continue a prompt, streaming text to stdout.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/engine.h>
#include <slm/generate.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

namespace slm::cli {

namespace {

// Prompt tokens per second of prefill, and generated tokens per second of
// decode (the first token comes from the prefill).
std::pair<double, double> rates(const GenerationResult& result) {
  const double decode_steps = static_cast<double>(std::max<size_t>(result.tokens.size(), 1) - 1);
  return {static_cast<double>(result.prompt_tokens.size()) / std::max(result.prefill_seconds, 1e-9),
          decode_steps / std::max(result.decode_seconds, 1e-9)};
}

// The object --output-format json prints for one prompt.
nlohmann::json result_json(const GenerationResult& result, double load_seconds) {
  const auto [prefill_rate, decode_rate] = rates(result);
  nlohmann::json out;
  out["text"] = result.text;
  out["prompt_tokens"] = result.prompt_tokens;
  out["tokens"] = result.tokens;
  out["finish_reason"] = finish_reason_name(result.finish_reason);
  out["logprobs"] = nlohmann::json::array();
  for (const auto& step : result.logprobs) {
    nlohmann::json entries = nlohmann::json::array();
    for (const TokenLogprob& t : step) entries.push_back({{"id", t.id}, {"logprob", t.logprob}});
    out["logprobs"].push_back(entries);
  }
  out["timings"] = {{"load_s", load_seconds},
                    {"prefill_tokens_per_s", prefill_rate},
                    {"decode_tokens_per_s", decode_rate}};
  out["peak_rss_mib"] = peak_rss_mib();
  return out;
}

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// One line of a --batch-file: the prompt and what it overrides of the command line's settings.
Request batch_request(const std::string& line, size_t number, const std::string& file, const GenerateOptions& defaults,
                      const Tokenizer& tokenizer, const std::function<std::shared_ptr<const Adapter>(const std::string&)>& adapter_for) {
  const std::string where = file + ":" + std::to_string(number);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": not JSON (", e.what(), ")");
  }
  if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string()) {
    fail(where, ": expected an object with a string \"prompt\"");
  }
  Request r;
  r.options = defaults;
  try {
    if (j.contains("max_tokens")) r.options.max_new_tokens = j["max_tokens"].get<int64_t>();
    if (j.contains("temperature")) r.options.sampling.temperature = j["temperature"].get<double>();
    if (j.contains("top_p")) r.options.sampling.top_p = j["top_p"].get<double>();
    if (j.contains("seed")) r.options.sampling.seed = j["seed"].get<uint64_t>();
    if (j.contains("stop")) {
      r.options.stop_strings = j["stop"].is_string() ? std::vector<std::string>{j["stop"].get<std::string>()}
                                                     : j["stop"].get<std::vector<std::string>>();
    }
    if (j.contains("adapter")) r.adapter = adapter_for(j["adapter"].get<std::string>());
  } catch (const nlohmann::json::type_error& e) {
    fail(where, ": a field has the wrong type (", e.what(), ")");
  }
  r.prompt = tokenizer.encode(j["prompt"].get<std::string>(), true);
  return r;
}

// --batch-file: every prompt through one engine at once, one JSON result per
// input line, in input order. A line that fails gets {"error": ...}.
int run_batch(const Model& model, const Tokenizer& tokenizer, const std::string& file, const GenerateOptions& defaults,
              const ModelOptions& model_options, int64_t parallel, int64_t kv_cache_tokens, double load_seconds) {
  std::istringstream lines(file == "-" ? read_text_file("-") : read_text_file(file));
  EngineOptions engine_options;
  engine_options.max_sequences = parallel;
  engine_options.kv_cache_tokens = kv_cache_tokens;
  engine_options.kv_dtype = defaults.kv_dtype;
  Engine engine(model, tokenizer, engine_options);
  std::map<std::string, std::shared_ptr<const Adapter>> adapters;
  auto adapter_for = [&](const std::string& dir) {
    auto& a = adapters[dir];
    if (!a) a = std::make_shared<const Adapter>(load_adapter(model, dir));
    return a;
  };
  if (!model_options.adapter.empty()) adapter_for(model_options.adapter);
  std::vector<std::optional<nlohmann::json>> results;
  std::string line;
  bool failed = false;
  for (size_t number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const size_t index = results.size();
    results.emplace_back();
    try {
      Request r = batch_request(line, number, file, defaults, tokenizer, adapter_for);
      if (!r.adapter && !model_options.adapter.empty()) r.adapter = adapter_for(model_options.adapter);
      r.on_done = [&results, index, load_seconds](const GenerationResult& g) { results[index] = result_json(g, load_seconds); };
      engine.add_request(std::move(r));
    } catch (const Error& e) {
      results[index] = nlohmann::json{{"error", e.what()}};
      failed = true;
    }
  }
  engine.run();
  for (const auto& r : results) std::cout << dump(*r) << "\n";
  return failed ? 1 : 0;
}

}  // namespace

int run_generate(int argc, char** argv) {
  CLI::App app{"Continue a prompt with a model.", "generate"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  add_adapter_option(app, model_options);
  std::string prompt, prompt_file, output_format = "text";
  GenerationFlags flags;
  bool truncate = false;
  std::string batch_file;
  int64_t parallel = 16;
  auto* prompt_opt = app.add_option("-p,--prompt", prompt, "prompt text");
  auto* file_opt = app.add_option("-f,--file", prompt_file, "read the prompt from a file ('-' for stdin)")->excludes(prompt_opt);
  app.add_option("--batch-file", batch_file,
                 "JSON lines, one {\"prompt\", \"max_tokens\", \"temperature\", \"top_p\", \"seed\", \"stop\", "
                 "\"adapter\"} per line: run them all at once, one JSON result per line, in input order")
      ->excludes(prompt_opt)
      ->excludes(file_opt);
  app.add_option("--parallel", parallel, "with --batch-file: sequences decoded at once")->check(CLI::Range(1, 4096));
  std::string kv_cache;
  app.add_option("--kv-cache", kv_cache,
                 "with --batch-file: the KV cache pool, in positions (8192) or memory (512MiB); default: the context "
                 "for each --parallel sequence, at most 64K positions");
  add_generation_options(app, flags);
  app.add_flag("--truncate", truncate, "drop the start of a prompt that does not fit the context");
  app.add_option("--logprobs", flags.options.logprobs, "report the K most likely tokens at each step (json output)")
      ->check(non_negative_number());
  app.add_option("--output-format", output_format, "text (streamed) or json")->check(CLI::IsMember({"text", "json"}));

  return run_command(app, argc, argv, [&] {
    if (app.count("--prompt") == 0 && app.count("--file") == 0 && batch_file.empty()) {
      fail("give a prompt with -p TEXT, -f FILE or --batch-file FILE");
    }
    const auto load_start = std::chrono::steady_clock::now();
    Model model = load_model(model_options);
    const auto adapter = load_adapter_option(model, model_options);
    const Tokenizer tokenizer = load_tokenizer(model_options.dir);
    const double load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

    const GenerateOptions options = resolve_generate_options(app, flags, model, model_options);
    if (!batch_file.empty()) {
      const int64_t pool = kv_cache.empty() ? 0 : parse_kv_cache_size(kv_cache, model.config(), options.kv_dtype);
      return run_batch(model, tokenizer, batch_file, options, model_options, parallel, pool, load_seconds);
    }
    const std::string text = app.count("--file") ? read_text_file(prompt_file) : prompt;
    std::vector<int32_t> ids = tokenizer.encode(text, true);
    const int64_t context = model.config().max_position_embeddings;
    if (truncate && static_cast<int64_t>(ids.size()) > context - 1) {
      const int64_t keep = std::max<int64_t>(1, context - std::max<int64_t>(options.max_new_tokens, 1));
      ids.erase(ids.begin(), ids.end() - keep);
    }

    const bool stream = output_format == "text";
    const GenerationResult result = generate(model, tokenizer, ids, options, [&](std::string_view piece) {
      if (!stream) return;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }, adapter);
    if (result.finish_reason == FinishReason::Context) {
      std::fprintf(stderr, "slm generate: stopped after %zu tokens: the model's context of %lld tokens is full\n",
                   result.tokens.size(), static_cast<long long>(model.config().max_position_embeddings));
    }
    const auto [prefill_rate, decode_rate] = rates(result);
    if (stream) {
      std::printf("\n");
      std::fflush(stdout);  // the text's last line before the summary on stderr
      std::fprintf(stderr, "[%zu prompt tokens at %.1f tok/s, %zu generated at %.1f tok/s, finish: %s]\n", ids.size(),
                   prefill_rate, result.tokens.size(), decode_rate, finish_reason_name(result.finish_reason).data());
      return 0;
    }
    std::cout << dump(result_json(result, load_seconds)) << "\n";
    return 0;
  });
}

}  // namespace slm::cli
