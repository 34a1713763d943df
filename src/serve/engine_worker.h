// The one thread that runs the Engine for the server. The Engine is not
// thread-safe and need not be: HTTP handlers hand it requests and
// cancellations through this worker, which applies them between steps, so a
// new request joins the running batch at the next step.
#pragma once

#include <slm/engine.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace slm::serve {

class EngineWorker {
 public:
  struct Stats {
    int64_t running = 0;  // sequences decoding or prefilling
    int64_t waiting = 0;  // requests queued for a sequence or for cache blocks
    int64_t kv_blocks_used = 0;
    int64_t kv_blocks = 0;
    int64_t reused_tokens = 0;  // prompt positions served from the prefix cache
  };

  EngineWorker(const Model& model, const Tokenizer& tokenizer, const EngineOptions& options);
  ~EngineWorker();  // cancels what is left and joins the thread
  EngineWorker(const EngineWorker&) = delete;
  EngineWorker& operator=(const EngineWorker&) = delete;

  // Thread-safe. The request's callbacks run on the worker thread. A request
  // the engine refuses, or one submitted after close(), ends at once:
  // on_done gets FinishReason::Cancelled.
  using Ticket = uint64_t;
  Ticket submit(Request request);
  // Thread-safe; the ticket's cache blocks are free after the next step.
  void cancel(Ticket ticket);
  // Thread-safe: cancels every request, now and from now on (the server is stopping).
  void close();

  Stats stats() const;
  int64_t context() const { return context_; }
  int64_t cache_capacity() const { return capacity_; }
  int64_t max_sequences() const { return max_sequences_; }

 private:
  void run();
  void cancel_all();  // worker thread only

  Engine engine_;
  const int64_t context_, capacity_, max_sequences_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::pair<Ticket, Request>> incoming_;
  std::vector<Ticket> cancels_;
  Stats stats_;
  bool stopping_ = false;
  bool closed_ = false;
  Ticket next_ticket_ = 1;
  std::unordered_map<Ticket, RequestId> requests_;  // worker thread only: tickets in the engine
  std::thread thread_;
};

}  // namespace slm::serve
