#include <slm/server.h>

#include "serve/completion.h"
#include "serve/engine_worker.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/web_assets.h"

#include <slm/error.h>

#include <httplib.h>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

namespace slm {

using serve::Completion;
using serve::dump;
using serve::Endpoint;
using serve::RequestError;

namespace {

void send_json(httplib::Response& res, int status, const ChatJson& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const RequestError& e) {
  if (e.status() == 503) res.set_header("Retry-After", "1");
  send_json(res, e.status(), serve::error_body(e));
}

ChatJson parse_body(const httplib::Request& req) {
  try {
    return ChatJson::parse(req.body);
  } catch (const ChatJson::exception& e) {
    throw RequestError(400, std::string("request: the body is not valid JSON: ") + e.what());
  }
}

// A bearer token compared in time that does not depend on where it differs.
bool same_key(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i] ^ expected[i % std::max<size_t>(expected.size(), 1)]);
  }
  return diff == 0;
}

// The path a request is counted under in /metrics: one of the endpoints, so
// that clients cannot grow the label set without bound.
std::string metric_path(const std::string& path) {
  static const char* const kPaths[] = {"/", "/health", "/metrics", "/v1/models", "/v1/chat/completions",
                                       "/v1/completions", "/v1/adapters", "/tokenize", "/detokenize"};
  for (const char* p : kPaths) {
    if (path == p) return path;
  }
  if (path.rfind("/v1/adapters/", 0) == 0) return "/v1/adapters/{name}";
  return "other";
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  struct AdapterEntry {
    std::shared_ptr<const Adapter> adapter;
    std::string dir;
    int64_t created;
  };

  ServerOptions options;
  httplib::Server http;
  std::thread listener;
  std::atomic<bool> ready{false};
  ServedModel served;
  std::unique_ptr<serve::EngineWorker> worker;
  serve::Metrics metrics;
  std::mutex adapters_mutex;
  std::map<std::string, AdapterEntry> adapters;
  int64_t started = 0;
  std::atomic<uint64_t> next_completion{1};

  void routes();
  void add_adapter(const std::string& name, const std::string& dir);
  // `path` (relative to --adapter-root, or absolute) resolved, when it lies
  // inside the root; a 403 RequestError otherwise, or when there is none.
  std::string inside_adapter_root(const std::string& path) const;
  void handle_completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  std::shared_ptr<const Adapter> resolve_model(const std::string& model);
  ChatJson model_list();
  serve::Metrics::Gauges gauges();
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() { stop(); }

int Server::start() {
  Impl& s = *impl_;
  const ServerOptions& o = s.options;
  if (o.max_queue < 0) fail("--max-queue must be >= 0, got ", o.max_queue);
  if (o.timeout_seconds <= 0) fail("--timeout must be positive, got ", o.timeout_seconds);
  // A connection holds a thread while it is open: enough for every sequence
  // to stream and as many more clients between requests, and idle
  // keep-alive connections give theirs back within seconds.
  const auto threads = static_cast<size_t>(2 * std::max<int64_t>(o.engine.max_sequences, 1) + 16);
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.http.set_read_timeout(o.timeout_seconds, 0);
  s.http.set_write_timeout(o.timeout_seconds, 0);
  s.http.set_keep_alive_timeout(std::min(o.timeout_seconds, 10));
  s.http.set_payload_max_length(o.max_body_bytes);
  s.routes();
  const int port = o.port == 0 ? s.http.bind_to_any_port(o.host) : (s.http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port <= 0) fail("cannot listen on ", o.host, ":", o.port, " (in use, or not an address of this machine)");
  s.started = static_cast<int64_t>(std::time(nullptr));
  s.listener = std::thread([&s] { s.http.listen_after_bind(); });
  return port;
}

void Server::serve(ServedModel model) {
  Impl& s = *impl_;
  if (!model.model || !model.tokenizer) fail("Server::serve: no model");
  s.served = std::move(model);
  s.worker = std::make_unique<serve::EngineWorker>(*s.served.model, *s.served.tokenizer, s.options.engine);
  s.ready = true;
}

void Server::add_adapter(const std::string& name, const std::string& dir) { impl_->add_adapter(name, dir); }

std::string Server::Impl::inside_adapter_root(const std::string& path) const {
  if (options.adapter_root.empty()) {
    throw RequestError(403, "request: loading adapters at run time is off; start the server with --adapter-root DIR "
                            "to allow the folders inside DIR", "path");
  }
  std::error_code ec;
  const std::filesystem::path root = std::filesystem::canonical(options.adapter_root, ec);
  if (ec) throw RequestError(403, "request: --adapter-root " + options.adapter_root + ": " + ec.message(), "path");
  // weakly_canonical resolves every link of the part that exists, so a link
  // inside the root that points out of it is outside.
  const std::filesystem::path resolved = std::filesystem::weakly_canonical(root / path, ec);
  const std::filesystem::path relative = ec ? std::filesystem::path("..") : resolved.lexically_relative(root);
  if (relative.empty() || *relative.begin() == "..") {
    throw RequestError(403, "path: \"" + path + "\" is outside --adapter-root " + root.string(), "path");
  }
  return resolved.string();
}

void Server::Impl::add_adapter(const std::string& name, const std::string& dir) {
  if (!served.model) fail("Server::add_adapter: serve() a model first");
  if (name.empty() || name == served.name) {
    fail("adapter name \"", name, "\" must be non-empty and differ from the base model's");
  }
  auto adapter = std::make_shared<const Adapter>(load_adapter(*served.model, dir, name));
  std::lock_guard lock(adapters_mutex);
  if (adapters.contains(name)) fail("an adapter named \"", name, "\" is already loaded");
  adapters[name] = {std::move(adapter), dir, static_cast<int64_t>(std::time(nullptr))};
}

void Server::stop() {
  Impl& s = *impl_;
  // Requests end first, so that streaming connections finish at once and the
  // HTTP threads can be joined; the worker outlives them (they cancel through it).
  if (s.worker) s.worker->close();
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
  s.worker.reset();
}

void Server::wait() {
  Impl& s = *impl_;
  if (s.listener.joinable()) s.listener.join();
}

std::shared_ptr<const Adapter> Server::Impl::resolve_model(const std::string& model) {
  if (model.empty() || model == served.name) return nullptr;
  std::lock_guard lock(adapters_mutex);
  const auto it = adapters.find(model);
  if (it == adapters.end()) {
    throw RequestError(404, "the model \"" + model + "\" does not exist: GET /v1/models lists the base model and "
                            "its adapters", "model", "model_not_found");
  }
  return it->second.adapter;
}

ChatJson Server::Impl::model_list() {
  ChatJson data = ChatJson::array();
  data.push_back({{"id", served.name}, {"object", "model"}, {"created", started}, {"owned_by", "slm"},
                  {"parent", nullptr}, {"max_model_len", worker->context()}});
  std::lock_guard lock(adapters_mutex);
  for (const auto& [name, entry] : adapters) {
    data.push_back({{"id", name}, {"object", "model"}, {"created", entry.created}, {"owned_by", "slm"},
                    {"parent", served.name}, {"root", entry.dir}, {"max_model_len", worker->context()}});
  }
  return {{"object", "list"}, {"data", data}};
}

serve::Metrics::Gauges Server::Impl::gauges() {
  const serve::EngineWorker::Stats st = worker->stats();
  std::lock_guard lock(adapters_mutex);
  return {st.running, st.waiting, st.kv_blocks_used, st.kv_blocks, st.reused_tokens,
          static_cast<int64_t>(adapters.size())};
}

void Server::Impl::routes() {
  // Every failure a client can cause is answered in OpenAI's error shape;
  // anything else is a bug, answered 500 with its message.
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const RequestError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, RequestError(500, std::string("internal error: ") + e.what()));
    }
  });
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413) {
      send_error(res, RequestError(413, "request: the body is larger than the server accepts (--max-body)"));
    } else if (res.status == 404) {
      send_error(res, RequestError(404, "no endpoint " + req.method + " " + req.path));
    } else {
      send_error(res, RequestError(res.status, "request: the HTTP request is malformed"));
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/" || req.path == "/health";
    if (!open && !options.api_key.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      if (auth.rfind(prefix, 0) != 0 || !same_key(auth.substr(prefix.size()), options.api_key)) {
        send_error(res, RequestError(401, auth.empty() ? "no API key: send \"Authorization: Bearer KEY\""
                                                       : "the API key is not the server's (--api-key)",
                                     "", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (!ready && req.path != "/") {
      send_error(res, RequestError(503, "the model is still loading"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.request_done(metric_path(req.path), res.status);
  });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = serve::chat_page();
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"status", "ok"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.prometheus_text(gauges()), "text/plain; version=0.0.4");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { send_json(res, 200, model_list()); });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, Endpoint::Chat);
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, Endpoint::Completion);
  });
  http.Post("/v1/adapters", [this](const httplib::Request& req, httplib::Response& res) {
    const ChatJson body = parse_body(req);
    if (!body.is_object() || !body.contains("name") || !body["name"].is_string()) {
      throw RequestError(400, "request: expected {\"name\": NAME, \"path\": DIR}", "name");
    }
    if (!body.contains("path") || !body["path"].is_string()) {
      throw RequestError(400, "request: expected {\"name\": NAME, \"path\": DIR}", "path");
    }
    const std::string name = body["name"].get<std::string>();
    const std::string dir = inside_adapter_root(body["path"].get<std::string>());
    try {
      add_adapter(name, dir);
    } catch (const Error& e) {
      const bool exists = std::string_view(e.what()).find("already loaded") != std::string_view::npos;
      throw RequestError(exists ? 409 : 400, e.what(), exists ? "name" : "path");
    }
    std::lock_guard lock(adapters_mutex);
    const AdapterEntry& entry = adapters.at(name);
    send_json(res, 201, {{"id", name}, {"object", "model"}, {"created", entry.created}, {"owned_by", "slm"},
                         {"parent", served.name}, {"root", entry.dir}});
  });
  http.Delete(R"(/v1/adapters/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    {
      std::lock_guard lock(adapters_mutex);
      // Requests in flight keep their own reference: they finish with it.
      if (adapters.erase(name) == 0) {
        throw RequestError(404, "no adapter named \"" + name + "\" is loaded", "name", "model_not_found");
      }
    }
    send_json(res, 200, {{"id", name}, {"object", "model"}, {"deleted", true}});
  });
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    const ChatJson body = parse_body(req);
    if (!body.is_object() || !body.contains("content") || !body["content"].is_string()) {
      throw RequestError(400, "request: expected {\"content\": TEXT, \"add_special\": false}", "content");
    }
    const bool add_special = body.contains("add_special") && body["add_special"].is_boolean() && body["add_special"].get<bool>();
    send_json(res, 200, {{"tokens", served.tokenizer->encode(body["content"].get<std::string>(), add_special)}});
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    const ChatJson body = parse_body(req);
    std::vector<int32_t> ids;
    const int32_t vocab = served.model->config().vocab_size;
    if (body.is_object() && body.contains("tokens") && body["tokens"].is_array()) {
      for (const ChatJson& x : body["tokens"]) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= vocab) {
          throw RequestError(400, "request: tokens must be token ids in [0, " + std::to_string(vocab) + ")", "tokens");
        }
        ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
      }
    } else {
      throw RequestError(400, "request: expected {\"tokens\": [ID, ...]}", "tokens");
    }
    send_json(res, 200, {{"content", served.tokenizer->decode(ids)}});
  });
}

void Server::Impl::handle_completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  const serve::CompletionRequest request = serve::parse_completion_request(parse_body(req), endpoint);
  std::shared_ptr<const Adapter> adapter = resolve_model(request.model);
  const auto completion = std::make_shared<Completion>(
      request, served, options, adapter, next_completion++, [this](const Completion& c) {
        // Once every choice has finished: the tokens and latencies of the whole completion.
        metrics.tokens(c.prompt_tokens(), c.completion_tokens());
        for (double t : c.time_to_first_token()) metrics.time_to_first_token(t);
        for (double t : c.time_per_output_token()) metrics.time_per_output_token(t);
      });
  completion->check_fits(worker->context(), worker->cache_capacity(), worker->max_sequences());
  const serve::EngineWorker::Stats st = worker->stats();
  if (st.waiting + completion->sequences() > options.max_queue + worker->max_sequences() - st.running) {
    throw RequestError(503, "the server is busy: " + std::to_string(st.waiting) +
                                " requests are waiting (--max-queue); retry shortly");
  }
  completion->submit(*worker);
  serve::EngineWorker* engine = worker.get();
  const auto provider = [completion](size_t, httplib::DataSink& sink) { return completion->write(sink); };
  const auto releaser = [completion, engine](bool) { completion->cancel(*engine); };
  res.status = 200;
  if (request.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", provider, releaser);
  } else {
    res.set_chunked_content_provider("application/json", provider, releaser);
  }
}

}  // namespace slm
