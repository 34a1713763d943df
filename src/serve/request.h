// The body of an OpenAI chat or text completion request, read and checked
// field by field. Every wrong field is a RequestError that names it (the
// OpenAI error's "param"); unknown fields are ignored, as OpenAI's are.
#pragma once

#include <slm/chat_template.h>
#include <slm/error.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace slm::serve {

// What a client did wrong (or what the server cannot do now): the HTTP
// status, OpenAI's error type and code, and the request field it concerns.
class RequestError : public Error {
 public:
  RequestError(int status, const std::string& message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // OpenAI's "type": invalid_request_error, authentication_error, ...
  std::string type() const;

 private:
  int status_;
  std::string param_, code_;
};

enum class Endpoint { Chat, Completion };

// A prompt of /v1/completions: text, or token ids.
struct Prompt {
  std::string text;
  std::vector<int32_t> ids;
  bool is_text = true;
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;  // empty: the base model

  // Chat: the messages (every content a string) and what else the chat
  // template sees: tools, and the members of chat_template_kwargs.
  ChatJson messages = ChatJson::array();
  ChatJson template_variables = ChatJson::object();
  // Completions: one or more prompts.
  std::vector<Prompt> prompts;

  // Sampling fields the request set; the others take the model's defaults.
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  double frequency_penalty = 0, presence_penalty = 0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;

  int64_t n = 1;  // choices per prompt
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // each token's log-probability
  int64_t top_logprobs = 0;    // and that many alternatives
};

// `body` is the parsed JSON of the request (any JSON value).
CompletionRequest parse_completion_request(const ChatJson& body, Endpoint endpoint);

}  // namespace slm::serve
