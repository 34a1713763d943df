#include "serve/engine_worker.h"

#include <slm/error.h>

#include <cstdio>

namespace slm::serve {

EngineWorker::EngineWorker(const Model& model, const Tokenizer& tokenizer, const EngineOptions& options)
    : engine_(model, tokenizer, options),
      context_(engine_.context()),
      capacity_(engine_.cache().capacity()),
      max_sequences_(options.max_sequences) {
  stats_.kv_blocks = engine_.cache().block_count();
  thread_ = std::thread([this] { run(); });
}

EngineWorker::~EngineWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

EngineWorker::Ticket EngineWorker::submit(Request request) {
  Ticket ticket;
  {
    std::lock_guard lock(mutex_);
    ticket = next_ticket_++;
    incoming_.emplace_back(ticket, std::move(request));
    ++stats_.waiting;
  }
  wake_.notify_all();
  return ticket;
}

void EngineWorker::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  wake_.notify_all();
}

void EngineWorker::cancel(Ticket ticket) {
  {
    std::lock_guard lock(mutex_);
    cancels_.push_back(ticket);
  }
  wake_.notify_all();
}

EngineWorker::Stats EngineWorker::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void EngineWorker::run() {
  bool busy = false;
  for (;;) {
    std::vector<std::pair<Ticket, Request>> incoming;
    std::vector<Ticket> cancels;
    bool closed = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return busy || stopping_ || closed_ || !incoming_.empty() || !cancels_.empty(); });
      if (stopping_) break;
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      closed = closed_;
    }
    for (auto& [ticket, request] : incoming) {
      if (closed) {
        GenerationResult refused;
        refused.prompt_tokens = request.prompt;
        refused.finish_reason = FinishReason::Cancelled;
        if (request.on_done) request.on_done(refused);
        continue;
      }
      auto on_done = std::move(request.on_done);
      request.on_done = [this, ticket, on_done](const GenerationResult& result) {
        requests_.erase(ticket);
        if (on_done) on_done(result);
      };
      try {
        requests_[ticket] = engine_.add_request(std::move(request));
      } catch (const Error& e) {
        // The server checks requests before submitting them; this is the backstop.
        std::fprintf(stderr, "slm serve: request refused by the engine: %s\n", e.what());
        GenerationResult refused;
        refused.finish_reason = FinishReason::Cancelled;
        if (on_done) on_done(refused);
      }
    }
    for (Ticket ticket : cancels) {
      const auto it = requests_.find(ticket);
      if (it != requests_.end()) engine_.cancel(it->second);
    }
    if (closed) cancel_all();
    try {
      busy = engine_.step();
    } catch (const std::exception& e) {
      // A bug, not bad input (requests are checked before they get here):
      // end every request rather than leave its client waiting, and go on.
      std::fprintf(stderr, "slm serve: a decode step failed, ending the requests in it: %s\n", e.what());
      cancel_all();
      busy = false;
    }
    std::lock_guard lock(mutex_);
    stats_.running = engine_.running();
    stats_.waiting = engine_.waiting() + static_cast<int64_t>(incoming_.size());
    stats_.kv_blocks_used = engine_.cache().block_count() - engine_.cache().free_blocks();
    stats_.reused_tokens = engine_.cache().reused_tokens();
  }
  cancel_all();
}

void EngineWorker::cancel_all() {
  // Cancelling erases from requests_ (through on_done), so walk a copy.
  std::vector<RequestId> ids;
  for (const auto& entry : requests_) ids.push_back(entry.second);
  for (RequestId id : ids) engine_.cancel(id);
}

}  // namespace slm::serve
