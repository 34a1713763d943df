// slm serve: the OpenAI-compatible HTTP server (slm/server.h) over one model
// and any number of LoRA adapters, until SIGINT or SIGTERM.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/server.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <pthread.h>

namespace slm::cli {

namespace {

std::string read_api_key(const std::string& file) {
  std::string key = read_text_file(file);
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) fail(file, ": empty (expected the API key on its first line)");
  return key;
}

}  // namespace

int run_serve(int argc, char** argv) {
  CLI::App app{"Serve a model over an OpenAI-compatible HTTP API, with a web chat at /.", "serve"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  ServerOptions options;
  options.engine.max_sequences = 32;
  std::string kv_cache, api_key_file, template_file, name;
  std::vector<std::string> adapters;
  app.add_option("--host", options.host, "address to listen on (loopback unless you mean otherwise)");
  app.add_option("--port", options.port, "port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--parallel", options.engine.max_sequences, "sequences decoded at once; more requests wait")
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-queue", options.max_queue, "requests that may wait beyond --parallel; more get 503")
      ->check(non_negative_number());
  app.add_option("--kv-cache", kv_cache,
                 "the KV cache pool, in positions (8192) or memory (512MiB); default: the context for each "
                 "--parallel sequence, at most 64K positions");
  app.add_option("--ctx", options.engine.context, "positions per sequence (default: the model's context)")
      ->check(positive_number());
  app.add_option("--max-tokens", options.max_tokens, "tokens a request may generate when it sets no max_tokens")
      ->check(non_negative_number());
  app.add_option("--adapter", adapters, "NAME=DIR: a PEFT LoRA adapter, served as model NAME (repeatable)");
  app.add_option("--adapter-root", options.adapter_root,
                 "let POST /v1/adapters load the adapter folders inside DIR (off without it)")
      ->check(CLI::ExistingDirectory);
  auto* key_opt = app.add_option("--api-key", options.api_key, "require \"Authorization: Bearer KEY\"");
  app.add_option("--api-key-file", api_key_file, "read the API key from the first line of a file")
      ->excludes(key_opt)
      ->check(CLI::ExistingFile);
  app.add_option("--chat-template", template_file, "Jinja file to render chats with instead of the model's")
      ->check(CLI::ExistingFile);
  app.add_option("--name", name, "the base model's id in /v1/models (default: the model folder's name)");
  app.add_option("--timeout", options.timeout_seconds, "seconds to read a request or write a reply; idle connections close after it")
      ->check(positive_number());
  app.add_option("--max-body", options.max_body_bytes, "largest request body in bytes (larger: 413)")
      ->check(positive_number());

  return run_command(app, argc, argv, [&] {
    std::vector<std::pair<std::string, std::string>> named_adapters;
    for (const std::string& a : adapters) {
      const size_t eq = a.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == a.size()) {
        fail("--adapter ", a, ": expected NAME=DIR");
      }
      named_adapters.emplace_back(a.substr(0, eq), a.substr(eq + 1));
    }
    if (!api_key_file.empty()) options.api_key = read_api_key(api_key_file);
    if (name.empty()) name = std::filesystem::path(model_options.dir).lexically_normal().filename().string();
    if (name.empty()) name = std::filesystem::absolute(model_options.dir).parent_path().filename().string();

    // SIGINT and SIGTERM are taken by sigwait below, in this thread alone:
    // every thread started from here on inherits the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    options.engine.kv_dtype = *parse_dtype(model_options.kv_dtype);
    if (!kv_cache.empty()) {
      const ModelConfig config = ModelConfig::from_model_path(model_options.dir);
      options.engine.kv_cache_tokens = parse_kv_cache_size(kv_cache, config, options.engine.kv_dtype);
    }
    Server server(options);
    const int port = server.start();
    const std::string url = "http://" + options.host + ":" + std::to_string(port);
    std::fprintf(stderr, "slm serve: loading %s (%s/health answers 503 until it is ready)\n", model_options.dir.c_str(),
                 url.c_str());

    const Model model = load_model(model_options);
    const Tokenizer tokenizer = load_tokenizer(model_options.dir);
    ServedModel served;
    served.model = &model;
    served.tokenizer = &tokenizer;
    served.name = name;
    if (!template_file.empty()) {
      served.chat_template = std::make_shared<const ChatTemplate>(read_text_file(template_file), template_file);
    } else if (!tokenizer.chat_template().empty()) {
      served.chat_template = std::make_shared<const ChatTemplate>(
          tokenizer.chat_template(), model_options.dir + "/tokenizer_config.json: chat_template");
    }
    served.defaults = resolve_generate_options(app, GenerationFlags{}, model, model_options);
    server.serve(std::move(served));
    for (const auto& [adapter_name, dir] : named_adapters) server.add_adapter(adapter_name, dir);

    std::fprintf(stderr, "slm serve: listening on %s (model \"%s\"%s, %lld sequences at once; web chat at %s/)\n",
                 url.c_str(), name.c_str(), named_adapters.empty() ? "" : " and its adapters",
                 static_cast<long long>(options.engine.max_sequences), url.c_str());
    int received = 0;
    sigwait(&signals, &received);
    std::fprintf(stderr, "slm serve: %s received, stopping\n", received == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
    return 0;
  });
}

}  // namespace slm::cli
