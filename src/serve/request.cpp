#include "serve/request.h"

#include "io/json_fields.h"

#include <limits>

namespace slm::serve {

RequestError::RequestError(int status, const std::string& message, std::string param, std::string code)
    : Error(message), status_(status), param_(std::move(param)), code_(std::move(code)) {}

std::string RequestError::type() const {
  switch (status_) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429:
    case 503: return "server_overloaded";
    default: return status_ >= 500 ? "server_error" : "invalid_request_error";
  }
}

namespace {

using Fields = BasicJsonFields<ChatJson>;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw RequestError(400, message, param); }

// Reads one field through JsonFields, turning its error into one that names the field.
template <class Read>
auto field(const char* name, Read read) {
  try {
    return read();
  } catch (const RequestError&) {
    throw;
  } catch (const Error& e) {
    bad(name, e.what());
  }
}

std::string content_text(const ChatJson& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) return {};
  if (!content.is_array()) bad(param, "request: " + param + " must be a string or a list of content parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const ChatJson& part = content[i];
    const std::string where = param + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      bad(where, "request: " + where + " must be an object with a string \"type\"");
    }
    if (part["type"] != "text") {
      bad(where + ".type", "request: " + where + ".type is \"" + part["type"].get<std::string>() +
                               "\"; this model reads text parts only (\"type\": \"text\")");
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      bad(where + ".text", "request: " + where + ".text must be a string");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

ChatJson read_messages(const ChatJson& body) {
  if (!body.contains("messages")) bad("messages", "request: missing field \"messages\" (a list of messages)");
  const ChatJson& given = body["messages"];
  if (!given.is_array() || given.empty()) bad("messages", "request: messages must be a non-empty list of messages");
  ChatJson messages = ChatJson::array();
  for (size_t i = 0; i < given.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const ChatJson& m = given[i];
    if (!m.is_object()) bad(where, "request: " + where + " must be an object with \"role\" and \"content\"");
    if (!m.contains("role") || !m["role"].is_string()) bad(where + ".role", "request: " + where + ".role must be a string");
    ChatJson message = m;  // name, tool_calls, tool_call_id, ... reach the template as sent
    message["content"] = content_text(m.contains("content") ? m["content"] : ChatJson(), where + ".content");
    messages.push_back(std::move(message));
  }
  return messages;
}

std::vector<int32_t> token_ids(const ChatJson& list, const std::string& param) {
  std::vector<int32_t> ids;
  for (const ChatJson& x : list) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      bad(param, "request: " + param + " must be text, a list of texts, or token ids");
    }
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return ids;
}

// prompt: "text", ["text", ...], [id, ...] or [[id, ...], ...].
std::vector<Prompt> read_prompts(const ChatJson& body) {
  if (!body.contains("prompt") || body["prompt"].is_null()) bad("prompt", "request: missing field \"prompt\"");
  const ChatJson& p = body["prompt"];
  auto text = [](const ChatJson& x) { return Prompt{x.get<std::string>(), {}, true}; };
  if (p.is_string()) return {text(p)};
  if (!p.is_array() || p.empty()) bad("prompt", "request: prompt must be text, a list of texts, or token ids");
  if (p[0].is_number_integer()) return {Prompt{{}, token_ids(p, "prompt"), false}};
  std::vector<Prompt> prompts;
  for (const ChatJson& x : p) {
    if (x.is_string()) {
      prompts.push_back(text(x));
    } else if (x.is_array()) {
      prompts.push_back(Prompt{{}, token_ids(x, "prompt"), false});
    } else {
      bad("prompt", "request: prompt must be text, a list of texts, or token ids");
    }
  }
  return prompts;
}

std::vector<std::string> read_stop(const ChatJson& body) {
  if (!body.contains("stop") || body["stop"].is_null()) return {};
  const ChatJson& s = body["stop"];
  if (s.is_string()) return {s.get<std::string>()};
  if (!s.is_array() || s.size() > 16) bad("stop", "request: stop must be a string or a list of at most 16 strings");
  std::vector<std::string> stops;
  for (const ChatJson& x : s) {
    if (!x.is_string()) bad("stop", "request: stop must be a string or a list of at most 16 strings");
    stops.push_back(x.get<std::string>());
  }
  return stops;
}

}  // namespace

CompletionRequest parse_completion_request(const ChatJson& body, Endpoint endpoint) {
  if (!body.is_object()) bad("", "request: the body must be a JSON object");
  const Fields f(body, "request");
  CompletionRequest r;
  r.endpoint = endpoint;
  r.model = field("model", [&] { return f.string("model", ""); });
  if (endpoint == Endpoint::Chat) {
    r.messages = read_messages(body);
    if (f.has("tools")) {
      if (!body["tools"].is_array()) bad("tools", "request: tools must be a list of tool definitions");
      r.template_variables["tools"] = body["tools"];
    }
    if (f.has("chat_template_kwargs")) {
      const ChatJson& kwargs = body["chat_template_kwargs"];
      if (!kwargs.is_object()) bad("chat_template_kwargs", "request: chat_template_kwargs must be an object");
      for (auto it = kwargs.begin(); it != kwargs.end(); ++it) r.template_variables[it.key()] = it.value();
    }
  } else {
    r.prompts = read_prompts(body);
  }

  constexpr int64_t kMaxTokens = int64_t{1} << 30;
  for (const char* name : {"max_completion_tokens", "max_tokens"}) {
    if (f.has(name)) r.max_tokens = field(name, [&] { return f.integer(name, 0, kMaxTokens); });
  }
  auto optional_number = [&](const char* name, double low, double high) -> std::optional<double> {
    if (!f.has(name)) return std::nullopt;
    return field(name, [&] { return f.number(name, low, high, 0); });
  };
  r.temperature = optional_number("temperature", 0, 2);
  r.top_p = optional_number("top_p", std::numeric_limits<double>::min(), 1);
  r.min_p = optional_number("min_p", 0, 1);
  r.repetition_penalty = optional_number("repetition_penalty", std::numeric_limits<double>::min(), 10);
  r.frequency_penalty = optional_number("frequency_penalty", -2, 2).value_or(0);
  r.presence_penalty = optional_number("presence_penalty", -2, 2).value_or(0);
  if (f.has("top_k")) {
    // -1, as vLLM spells it, is off like 0.
    r.top_k = std::max<int64_t>(0, field("top_k", [&] { return f.integer("top_k", -1, kMaxTokens); }));
  }
  if (f.has("seed")) {
    r.seed = static_cast<uint64_t>(field("seed", [&] {
      return f.integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
    }));
  }
  r.stop = read_stop(body);
  r.ignore_eos = field("ignore_eos", [&] { return f.boolean("ignore_eos", false); });
  r.n = field("n", [&] { return f.integer("n", 1, 128, 1); });
  r.stream = field("stream", [&] { return f.boolean("stream", false); });
  if (f.has("stream_options")) {
    const ChatJson& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "request: stream_options must be an object");
    r.include_usage = field("stream_options.include_usage",
                            [&] { return Fields(so, "request: stream_options").boolean("include_usage", false); });
  }
  if (endpoint == Endpoint::Chat) {
    r.logprobs = field("logprobs", [&] { return f.boolean("logprobs", false); });
    r.top_logprobs = field("top_logprobs", [&] { return f.integer("top_logprobs", 0, 20, 0); });
    if (r.top_logprobs > 0 && !r.logprobs) bad("top_logprobs", "request: top_logprobs needs \"logprobs\": true");
  } else if (f.has("logprobs")) {
    // Completions' logprobs is the number of alternatives (0 to 5 at OpenAI; 20 here).
    r.top_logprobs = field("logprobs", [&] { return f.integer("logprobs", 0, 20); });
    r.logprobs = true;
  }
  return r;
}

}  // namespace slm::serve
