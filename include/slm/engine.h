// The generation engine: many requests decoded together over one model and
// one paged KV cache (continuous batching). Each step builds one batch from
// every active request: a token for each one decoding, and prompt chunks for
// those still prefilling, so a long prompt never stalls the others. A request
// streams its text as it becomes final; cancelling one frees its cache at once.
#pragma once

#include <slm/generate.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

struct EngineOptions {
  // Positions the KV cache pool holds, for every sequence together (0: the
  // model's context for each of max_sequences sequences, at most 64K).
  int64_t kv_cache_tokens = 0;
  DType kv_dtype = DType::F32;
  int64_t kv_block_tokens = KVCache::kDefaultBlockTokens;
  int64_t max_sequences = 64;       // decoding at once; further requests wait
  int64_t max_batch_tokens = 512;   // tokens per step: decode tokens first, then prompt chunks
  // Reuse cached blocks of a shared prompt start. A request whose prompt
  // begins with a full block that another request is prefilling right now
  // waits for that prefill and then reuses it, so n requests with one prompt
  // (n choices, or one system prompt) compute it once.
  bool prefix_caching = true;
  int64_t context = 0;  // positions of one sequence (0: the model's max_position_embeddings)
};

struct Request {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  std::shared_ptr<const Adapter> adapter;           // null: the base model
  std::function<void(std::string_view)> on_text;    // text as it becomes final
  std::function<void(const GenerationResult&)> on_done;
};

using RequestId = int64_t;

class Engine {
 public:
  Engine(const Model& model, const Tokenizer& tokenizer, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. Fails, for this request alone, when its prompt is empty
  // or cannot fit the context or the whole pool.
  RequestId add_request(Request request);
  // Stops a request now (on_done gets FinishReason::Cancelled); its cache
  // blocks are free before this returns. Unknown or finished ids are ignored.
  void cancel(RequestId id);
  // Runs one batch; false when no request is waiting or running.
  bool step();
  // Steps until every request has finished.
  void run();

  int64_t running() const;
  int64_t waiting() const;
  int64_t context() const { return context_; }
  const KVCache& cache() const { return cache_; }

 private:
  struct Active;
  void admit();
  bool prefix_being_computed(const Request& r) const;
  void finish(Active& a, FinishReason reason);

  const Model& model_;
  const Tokenizer& tokenizer_;
  EngineOptions options_;
  int64_t context_;
  int64_t decodable_;  // ids the tokenizer can decode: the rest are never sampled
  KVCache cache_;
  Batch batch_;
  std::deque<std::pair<RequestId, Request>> waiting_;
  std::vector<std::unique_ptr<Active>> active_;
  std::vector<int32_t> free_sequences_;
  std::vector<Active*> output_owner_;  // the request each logits row samples for
  std::vector<float> raw_logits_;      // a row before sampling changes it, for token_logprobs
  RequestId next_id_ = 0;
};

}  // namespace slm
