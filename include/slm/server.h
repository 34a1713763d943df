// slm serve as a library: an OpenAI-compatible HTTP server over the Engine.
// Every request joins the running batch at the next step (continuous
// batching); replies stream as Server-Sent Events; LoRA adapters are served
// as models of their own and can be loaded and unloaded while it runs.
// docs/serving.md describes the endpoints.
#pragma once

#include <slm/chat_template.h>
#include <slm/engine.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace slm {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port (start() returns it)
  std::string api_key;  // when set, every endpoint but / and /health needs "Authorization: Bearer KEY"
  int64_t max_queue = 256;      // sequences waiting beyond the running ones; a request past it gets 503
  int timeout_seconds = 600;    // to read a request or write a response, and for an idle connection
  size_t max_body_bytes = size_t{8} << 20;
  int64_t max_tokens = 2048;    // a request's limit when it sets none
  // POST /v1/adapters loads only folders inside this one (a path relative to
  // it, or an absolute one under it, symbolic links resolved); empty: that
  // endpoint answers 403, so that a client cannot make the server read
  // whatever folder it names.
  std::string adapter_root;
  EngineOptions engine;
};

// The model a server runs, and how its requests default.
struct ServedModel {
  const Model* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  std::string name;  // its id in /v1/models and the "model" of requests
  // Renders /v1/chat/completions' messages; null: that endpoint says the
  // model has no chat template.
  std::shared_ptr<const ChatTemplate> chat_template;
  // Sampling defaults for fields a request leaves out, and the eos ids.
  GenerateOptions defaults;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // stops
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and answers from threads of its own; until serve() is
  // called, /health says 503 (loading) and so does every other endpoint.
  // Fails naming the address when it cannot bind. Returns the port.
  int start();
  // The objects `model` points to must outlive the server.
  void serve(ServedModel model);
  // Loads a PEFT adapter (DIR/adapter_config.json, adapter_model.safetensors)
  // servable as "model": NAME. Fails naming the file when it does not fit.
  void add_adapter(const std::string& name, const std::string& dir);
  // Stops listening; requests in flight are cancelled. Safe from any thread.
  void stop();
  // Blocks until the server has stopped.
  void wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slm
