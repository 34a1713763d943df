#include "serve/completion.h"

#include <httplib.h>

#include <ctime>
#include <random>

namespace slm::serve {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

ChatJson bytes_of(const std::string& s) {
  ChatJson out = ChatJson::array();
  for (unsigned char c : s) out.push_back(static_cast<int>(c));
  return out;
}

}  // namespace

std::string dump(const ChatJson& j) { return j.dump(-1, ' ', false, ChatJson::error_handler_t::replace); }

ChatJson error_body(const RequestError& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type()},
            {"param", e.param().empty() ? ChatJson(nullptr) : ChatJson(e.param())},
            {"code", e.code().empty() ? ChatJson(nullptr) : ChatJson(e.code())}}}};
}

std::string_view openai_finish_reason(FinishReason reason) {
  switch (reason) {
    case FinishReason::Eos:
    case FinishReason::Stop: return "stop";
    case FinishReason::Length:
    case FinishReason::Context: return "length";
    case FinishReason::Cancelled: break;
  }
  return "cancelled";
}

Completion::Completion(const CompletionRequest& request, const ServedModel& served, const ServerOptions& options,
                       std::shared_ptr<const Adapter> adapter, uint64_t number, OnFinished on_finished)
    : request_(request),
      served_(served),
      adapter_(std::move(adapter)),
      created_(static_cast<int64_t>(std::time(nullptr))),
      model_name_(request.model.empty() ? served.name : request.model),
      on_finished_(std::move(on_finished)),
      arrived_(std::chrono::steady_clock::now()) {
  const Tokenizer& tokenizer = *served.tokenizer;
  if (request.endpoint == Endpoint::Chat) {
    id_ = "chatcmpl-" + std::to_string(number);
    if (!served.chat_template) {
      throw RequestError(400, "this model has no chat template: use /v1/completions, or start slm serve with "
                              "--chat-template FILE", "messages");
    }
    ChatJson context = chat_template_context(tokenizer, request.messages, true);
    for (auto it = request.template_variables.begin(); it != request.template_variables.end(); ++it) {
      context[it.key()] = it.value();
    }
    std::string text;
    try {
      text = served.chat_template->render(context);
    } catch (const Error& e) {
      throw RequestError(400, std::string("the chat template cannot render these messages: ") + e.what(), "messages");
    }
    // apply_chat_template's text carries its own special tokens.
    prompts_.push_back(tokenizer.encode(text, false));
  } else {
    id_ = "cmpl-" + std::to_string(number);
    for (const Prompt& p : request.prompts) prompts_.push_back(p.is_text ? tokenizer.encode(p.text, true) : p.ids);
  }

  GenerateOptions base = served.defaults;
  base.max_new_tokens = request.max_tokens.value_or(options.max_tokens);
  SamplingParams& s = base.sampling;
  if (request.temperature) s.temperature = *request.temperature;
  if (request.top_p) s.top_p = *request.top_p;
  if (request.top_k) s.top_k = *request.top_k;
  if (request.min_p) s.min_p = *request.min_p;
  if (request.repetition_penalty) s.repetition_penalty = *request.repetition_penalty;
  s.frequency_penalty = request.frequency_penalty;
  s.presence_penalty = request.presence_penalty;
  s.seed = request.seed ? *request.seed : std::random_device{}();
  base.stop_strings = request.stop;
  base.ignore_eos = request.ignore_eos;
  base.skip_special_tokens = true;
  base.token_logprobs = request.logprobs;
  base.logprobs = request.top_logprobs;
  for (size_t p = 0; p < prompts_.size(); ++p) {
    for (int64_t j = 0; j < request.n; ++j) {
      Choice c;
      c.prompt = p;
      c.options = base;
      c.options.sampling.seed = s.seed + static_cast<uint64_t>(j);  // n choices, n different samples
      choices_.push_back(std::move(c));
    }
  }
}

void Completion::check_fits(int64_t context, int64_t cache_capacity, int64_t max_sequences) const {
  const char* param = request_.endpoint == Endpoint::Chat ? "messages" : "prompt";
  for (const auto& ids : prompts_) {
    const auto length = static_cast<int64_t>(ids.size());
    if (length == 0) throw RequestError(400, "the prompt is empty", param);
    if (length >= context) {
      throw RequestError(400, "the prompt has " + std::to_string(length) + " tokens, and the context holds " +
                                  std::to_string(context) + " (--ctx): shorten it",
                         param, "context_length_exceeded");
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= served_.model->config().vocab_size) {
        throw RequestError(400, "token id " + std::to_string(id) + " is outside the vocabulary", param);
      }
    }
    const int64_t needed = std::min(context, length + std::max<int64_t>(choices_.front().options.max_new_tokens, 1));
    if (needed > cache_capacity) {
      throw RequestError(400, "the request needs " + std::to_string(needed) + " positions of KV cache and the pool "
                              "holds " + std::to_string(cache_capacity) + " (--kv-cache): lower max_tokens",
                         "max_tokens");
    }
  }
  if (sequences() > max_sequences) {
    throw RequestError(400, "the request asks for " + std::to_string(sequences()) + " sequences (prompts × n); the "
                            "server runs at most " + std::to_string(max_sequences) + " at once (--parallel)", "n");
  }
}

void Completion::submit(EngineWorker& worker) {
  const auto self = shared_from_this();
  for (size_t i = 0; i < choices_.size(); ++i) {
    Request r;
    r.prompt = prompts_[choices_[i].prompt];
    r.options = choices_[i].options;
    r.adapter = adapter_;
    r.on_text = [self, i](std::string_view text) {
      std::lock_guard lock(self->mutex_);
      Choice& c = self->choices_[i];
      if (c.first_text_seconds < 0) c.first_text_seconds = seconds_since(self->arrived_);
      c.unsent += text;
      self->news_ = true;
      self->changed_.notify_all();
    };
    r.on_done = [self, i](const GenerationResult& result) {
      bool all = false;
      {
        std::lock_guard lock(self->mutex_);
        Choice& c = self->choices_[i];
        c.result = result;
        if (c.first_text_seconds < 0) c.first_text_seconds = seconds_since(self->arrived_);
        c.done = true;
        all = ++self->finished_ == self->choices_.size();
        self->news_ = true;
      }
      self->changed_.notify_all();
      if (all && self->on_finished_) self->on_finished_(*self);
    };
    const EngineWorker::Ticket ticket = worker.submit(std::move(r));
    std::lock_guard lock(mutex_);
    choices_[i].ticket = ticket;
  }
}

void Completion::cancel(EngineWorker& worker) {
  std::vector<EngineWorker::Ticket> running;
  {
    std::lock_guard lock(mutex_);
    for (const Choice& c : choices_) {
      if (!c.done) running.push_back(c.ticket);
    }
  }
  for (EngineWorker::Ticket t : running) worker.cancel(t);
}

bool Completion::write(httplib::DataSink& sink) {
  std::string out;
  bool finished = false;
  {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, std::chrono::milliseconds(250), [&] { return news_; });
    news_ = false;
    finished = finished_ == choices_.size();
    if (request_.stream) {
      out = stream_events(finished);
    } else if (finished) {
      out = dump(response());
    }
  }
  // Nothing new: still worth knowing whether anyone is listening.
  if (out.empty()) return finished ? (sink.done(), true) : sink.is_writable();
  if (!sink.write(out.data(), out.size())) return false;
  if (finished) sink.done();
  return true;
}

ChatJson Completion::chunk(ChatJson choices) const {
  ChatJson c = {{"id", id_},
                {"object", request_.endpoint == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", model_name_},
                {"choices", std::move(choices)}};
  if (request_.include_usage) c["usage"] = nullptr;
  return c;
}

std::string Completion::stream_events(bool finished) {
  std::string out;
  auto event = [&](const ChatJson& j) { out += "data: " + dump(j) + "\n\n"; };
  const bool chat = request_.endpoint == Endpoint::Chat;
  for (size_t i = 0; i < choices_.size(); ++i) {
    Choice& c = choices_[i];
    if (chat && !c.started) {
      event(chunk(ChatJson::array({{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                   {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
    }
    c.started = true;
    if (!c.unsent.empty()) {
      ChatJson choice = {{"index", i}};
      if (chat) {
        choice["delta"] = {{"content", c.unsent}};
      } else {
        choice["text"] = c.unsent;
      }
      choice["logprobs"] = nullptr;
      choice["finish_reason"] = nullptr;
      event(chunk(ChatJson::array({choice})));
      c.unsent.clear();
    }
    if (c.done && !c.reported) {
      ChatJson choice = {{"index", i}};
      if (chat) {
        choice["delta"] = ChatJson::object();
      } else {
        choice["text"] = "";
      }
      choice["logprobs"] = nullptr;
      choice["finish_reason"] = openai_finish_reason(c.result.finish_reason);
      event(chunk(ChatJson::array({choice})));
      c.reported = true;
    }
  }
  if (finished) {
    if (request_.include_usage) {
      ChatJson last = chunk(ChatJson::array());
      last["usage"] = usage();
      event(last);
    }
    out += "data: [DONE]\n\n";
  }
  return out;
}

ChatJson Completion::logprobs_json(const Choice& c) const {
  const Tokenizer& tokenizer = *served_.tokenizer;
  auto piece = [&](int32_t id) { return tokenizer.decode(std::span<const int32_t>(&id, 1)); };
  const auto& tokens = c.result.tokens;
  if (request_.endpoint == Endpoint::Chat) {
    ChatJson content = ChatJson::array();
    for (size_t t = 0; t < tokens.size() && t < c.result.token_logprobs.size(); ++t) {
      const std::string text = piece(tokens[t]);
      ChatJson top = ChatJson::array();
      if (t < c.result.logprobs.size()) {
        for (const TokenLogprob& alt : c.result.logprobs[t]) {
          const std::string alt_text = piece(alt.id);
          top.push_back({{"token", alt_text}, {"logprob", alt.logprob}, {"bytes", bytes_of(alt_text)}});
        }
      }
      content.push_back({{"token", text}, {"logprob", c.result.token_logprobs[t]}, {"bytes", bytes_of(text)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  ChatJson out = {{"tokens", ChatJson::array()}, {"token_logprobs", ChatJson::array()},
                  {"top_logprobs", ChatJson::array()}, {"text_offset", ChatJson::array()}};
  size_t offset = 0;
  for (size_t t = 0; t < tokens.size() && t < c.result.token_logprobs.size(); ++t) {
    const std::string text = piece(tokens[t]);
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(c.result.token_logprobs[t]);
    ChatJson top = ChatJson::object();
    if (t < c.result.logprobs.size()) {
      for (const TokenLogprob& alt : c.result.logprobs[t]) top[piece(alt.id)] = alt.logprob;
    }
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(offset);
    offset += text.size();
  }
  return out;
}

ChatJson Completion::usage() const {
  const int64_t prompt = prompt_tokens(), generated = completion_tokens();
  return {{"prompt_tokens", prompt}, {"completion_tokens", generated}, {"total_tokens", prompt + generated}};
}

ChatJson Completion::response() const {
  const bool chat = request_.endpoint == Endpoint::Chat;
  ChatJson choices = ChatJson::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    ChatJson choice = {{"index", i}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.result.text}};
    } else {
      choice["text"] = c.result.text;
    }
    choice["logprobs"] = request_.logprobs ? logprobs_json(c) : ChatJson(nullptr);
    choice["finish_reason"] = openai_finish_reason(c.result.finish_reason);
    choices.push_back(std::move(choice));
  }
  return {{"id", id_},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_name_},
          {"choices", std::move(choices)},
          {"usage", usage()}};
}

int64_t Completion::prompt_tokens() const {
  int64_t total = 0;
  for (const auto& p : prompts_) total += static_cast<int64_t>(p.size());  // once per prompt, however many choices
  return total;
}

int64_t Completion::completion_tokens() const {
  int64_t total = 0;
  for (const Choice& c : choices_) total += static_cast<int64_t>(c.result.tokens.size());
  return total;
}

std::vector<double> Completion::time_to_first_token() const {
  std::vector<double> out;
  for (const Choice& c : choices_) {
    if (!c.result.tokens.empty()) out.push_back(c.first_text_seconds);
  }
  return out;
}

std::vector<double> Completion::time_per_output_token() const {
  std::vector<double> out;
  for (const Choice& c : choices_) {
    if (c.result.tokens.size() > 1) out.push_back(c.result.decode_seconds / static_cast<double>(c.result.tokens.size() - 1));
  }
  return out;
}

}  // namespace slm::serve
