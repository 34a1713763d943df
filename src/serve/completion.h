// One chat or text completion from its request to its last byte: the
// prompts it tokenizes, the engine requests of its choices (prompts × n),
// and the response it writes, as one JSON object or as Server-Sent Events.
#pragma once

#include "serve/engine_worker.h"
#include "serve/request.h"

#include <slm/server.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace httplib {
class DataSink;
}

namespace slm::serve {

// JSON text of a reply; invalid UTF-8 (a token cut inside a character) becomes U+FFFD.
std::string dump(const ChatJson& j);
// OpenAI's error object for `e`: {"error": {"message", "type", "param", "code"}}.
ChatJson error_body(const RequestError& e);
// OpenAI's finish_reason: "stop" for an end-of-sequence token or a stop string, "length" for a limit.
std::string_view openai_finish_reason(FinishReason reason);

class Completion : public std::enable_shared_from_this<Completion> {
 public:
  using OnFinished = std::function<void(const Completion&)>;

  // Renders and tokenizes the prompts; a RequestError when they cannot be.
  Completion(const CompletionRequest& request, const ServedModel& served, const ServerOptions& options,
             std::shared_ptr<const Adapter> adapter, uint64_t number, OnFinished on_finished);

  // A RequestError (400) when a prompt, or the n choices, cannot run at all.
  void check_fits(int64_t context, int64_t cache_capacity, int64_t max_sequences) const;
  int64_t sequences() const { return static_cast<int64_t>(choices_.size()); }
  void submit(EngineWorker& worker);
  // Cancels every choice still running (the client is gone, or the response is done).
  void cancel(EngineWorker& worker);

  // An HTTP content provider's body: waits a little for news, writes it, and
  // ends the response once every choice has finished. False when the client
  // has gone away.
  bool write(httplib::DataSink& sink);

  int64_t prompt_tokens() const;
  int64_t completion_tokens() const;
  std::vector<double> time_to_first_token() const;
  std::vector<double> time_per_output_token() const;

 private:
  struct Choice {
    size_t prompt = 0;          // which of prompts_
    GenerateOptions options;
    EngineWorker::Ticket ticket = 0;
    std::string unsent;         // streamed text not yet written
    bool started = false;       // its first chunk (the role) is written
    bool done = false, reported = false;
    GenerationResult result;
    double first_text_seconds = -1;
  };

  ChatJson chunk(ChatJson choices) const;
  std::string stream_events(bool finished);
  ChatJson response() const;
  ChatJson logprobs_json(const Choice& c) const;
  ChatJson usage() const;

  CompletionRequest request_;
  const ServedModel& served_;
  std::shared_ptr<const Adapter> adapter_;
  std::string id_;
  int64_t created_;
  std::string model_name_;
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<Choice> choices_;
  OnFinished on_finished_;
  std::chrono::steady_clock::time_point arrived_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool news_ = false;
  size_t finished_ = 0;
};

}  // namespace slm::serve
