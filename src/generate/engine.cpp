#include <slm/engine.h>
#include <slm/error.h>

#include <algorithm>
#include <cmath>

namespace slm {

namespace {

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Holds back text that might be the start of a stop string, so a stop string
// is never printed, not even in part.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stops) : stops_(stops) {}

  // Returns the text safe to emit; sets `stopped` when a stop string appeared.
  std::string push(std::string_view piece, bool& stopped) {
    pending_ += piece;
    size_t earliest = std::string::npos;
    for (const std::string& stop : stops_) {
      if (stop.empty()) continue;
      earliest = std::min(earliest, pending_.find(stop));
    }
    if (earliest != std::string::npos) {
      stopped = true;
      std::string out = pending_.substr(0, earliest);
      pending_.clear();
      return out;
    }
    size_t held = 0;
    for (const std::string& stop : stops_) {
      for (size_t len = std::min(stop.size() - 1, pending_.size()); len > held; --len) {
        if (pending_.compare(pending_.size() - len, len, stop, 0, len) == 0) {
          held = len;
          break;
        }
      }
    }
    std::string out = pending_.substr(0, pending_.size() - held);
    pending_.erase(0, pending_.size() - held);
    return out;
  }

  std::string flush() { return std::exchange(pending_, {}); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

}  // namespace

// A request between admission and its end: its sequence in the cache, how
// much of its prompt the cache holds, and the state that turns logits into text.
struct Engine::Active {
  Active(RequestId request_id, Request r, int32_t sequence, const Tokenizer& tokenizer)
      : id(request_id),
        request(std::move(r)),
        seq(sequence),
        sampler(request.options.sampling),
        stream(tokenizer, request.options.skip_special_tokens),
        stop_filter(request.options.stop_strings),
        history(request.prompt),
        admitted(std::chrono::steady_clock::now()) {
    result.prompt_tokens = request.prompt;
  }

  bool prefilling() const { return cursor < static_cast<int64_t>(request.prompt.size()); }

  void emit(const std::string& text) {
    if (text.empty()) return;
    result.text += text;
    if (request.on_text) request.on_text(text);
  }

  RequestId id;
  Request request;
  int32_t seq;
  int64_t cursor = 0;        // prompt tokens the cache holds
  int32_t pending = -1;      // the sampled token the next step runs
  Sampler sampler;
  StreamDecoder stream;
  StopFilter stop_filter;
  std::vector<int32_t> history;
  GenerationResult result;
  std::chrono::steady_clock::time_point admitted, first_token;
  bool done = false;
};

Engine::Engine(const Model& model, const Tokenizer& tokenizer, const EngineOptions& options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      context_(options.context > 0 ? std::min(options.context, model.config().max_position_embeddings)
                                   : model.config().max_position_embeddings),
      cache_(model.config(),
             options.kv_cache_tokens > 0
                 ? options.kv_cache_tokens
                 : std::min<int64_t>(context_ * std::max<int64_t>(1, options.max_sequences), int64_t{1} << 16),
             options.kv_dtype, options.kv_block_tokens, model.device()) {
  if (options.context < 0) fail("engine: context must be >= 0, got ", options.context);
  decodable_ = std::min<int64_t>(tokenizer.vocab_size(), model.config().vocab_size);
  if (options.max_sequences <= 0) fail("engine: max_sequences must be positive, got ", options.max_sequences);
  if (options.max_batch_tokens <= 0) fail("engine: max_batch_tokens must be positive, got ", options.max_batch_tokens);
  for (int32_t s = static_cast<int32_t>(options.max_sequences) - 1; s >= 0; --s) free_sequences_.push_back(s);
}

Engine::~Engine() = default;

int64_t Engine::running() const { return static_cast<int64_t>(active_.size()); }
int64_t Engine::waiting() const { return static_cast<int64_t>(waiting_.size()); }

namespace {

// The cache context a request's keys and values are computed in: its adapter's.
uint64_t context_of(const Request& r) { return r.adapter ? r.adapter->id() : 0; }

// Positions a request may occupy: its prompt and every token it may add, within the context.
int64_t positions_needed(const Request& r, int64_t context) {
  return std::min(context, static_cast<int64_t>(r.prompt.size()) + std::max<int64_t>(r.options.max_new_tokens, 1));
}

}  // namespace

RequestId Engine::add_request(Request request) {
  const ModelConfig& c = model_.config();
  const auto prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len == 0) fail("the prompt is empty (no tokens to start from)");
  if (request.options.max_new_tokens < 0) {
    fail("--max-new-tokens must be >= 0, got ", request.options.max_new_tokens);
  }
  if (prompt_len > context_) {
    fail("the prompt has ", prompt_len, " tokens but the context is ", context_, "; shorten it or pass --truncate");
  }
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
  const int64_t needed = positions_needed(request, context_);
  if (needed > cache_.capacity()) {
    fail("the request needs ", needed, " positions of KV cache, the whole pool holds ", cache_.capacity(),
         " (--kv-cache)");
  }
  if (request.adapter && request.adapter->layers() != c.num_hidden_layers) {
    fail("adapter \"", request.adapter->name(), "\" has ", request.adapter->layers(), " layers, the model ",
         c.num_hidden_layers);
  }
  const RequestId id = next_id_++;
  waiting_.emplace_back(id, std::move(request));
  return id;
}

bool Engine::prefix_being_computed(const Request& r) const {
  const auto block = static_cast<size_t>(cache_.block_tokens());
  if (!options_.prefix_caching || r.prompt.size() <= block) return false;
  for (const auto& a : active_) {
    const std::vector<int32_t>& other = a->request.prompt;
    if (!a->prefilling() || context_of(a->request) != context_of(r) || other.size() < block) continue;
    if (std::equal(r.prompt.begin(), r.prompt.begin() + static_cast<std::ptrdiff_t>(block), other.begin())) return true;
  }
  return false;
}

void Engine::admit() {
  for (auto it = waiting_.begin(); it != waiting_.end() && !free_sequences_.empty();) {
    Request& r = it->second;
    if (prefix_being_computed(r)) {
      ++it;  // its prefix will be in the cache once that prefill ends
      continue;
    }
    const int32_t seq = free_sequences_.back();
    const int64_t reused = options_.prefix_caching ? cache_.reuse_prefix(seq, r.prompt, context_of(r)) : 0;
    // Every block the request may need is taken now, so a running request never finds the pool full.
    if (!cache_.reserve(seq, positions_needed(r, context_))) {
      cache_.clear(seq);
      return;  // first come, first served: wait for blocks to free
    }
    free_sequences_.pop_back();
    auto active = std::make_unique<Active>(it->first, std::move(r), seq, tokenizer_);
    active->cursor = reused;
    it = waiting_.erase(it);
    active_.push_back(std::move(active));
  }
}

void Engine::finish(Active& a, FinishReason reason) {
  if (a.done) return;
  a.done = true;
  a.result.finish_reason = reason;
  if (reason != FinishReason::Stop && reason != FinishReason::Cancelled) {
    bool stopped = false;
    a.emit(a.stop_filter.push(a.stream.finish(), stopped));
    if (stopped) {
      a.result.finish_reason = FinishReason::Stop;
    } else {
      a.emit(a.stop_filter.flush());
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (a.result.tokens.empty()) {
    a.result.prefill_seconds = seconds_between(a.admitted, now);
  } else {
    a.result.decode_seconds = seconds_between(a.first_token, now);
  }
  cache_.clear(a.seq);
  free_sequences_.push_back(a.seq);
  if (a.request.on_done) a.request.on_done(a.result);
}

void Engine::cancel(RequestId id) {
  const auto queued = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w.first == id; });
  if (queued != waiting_.end()) {
    Request r = std::move(queued->second);
    waiting_.erase(queued);
    GenerationResult result;
    result.prompt_tokens = r.prompt;
    result.finish_reason = FinishReason::Cancelled;
    if (r.on_done) r.on_done(result);
    return;
  }
  for (const auto& a : active_) {
    if (a->id == id) finish(*a, FinishReason::Cancelled);
  }
}

bool Engine::step() {
  admit();
  std::erase_if(active_, [](const auto& a) { return a->done; });
  if (active_.empty()) return !waiting_.empty();
  batch_.clear();
  output_owner_.clear();
  int64_t budget = options_.max_batch_tokens;
  for (const auto& a : active_) {
    if (a->prefilling()) continue;
    batch_.add(a->pending, static_cast<int32_t>(cache_.length(a->seq)), a->seq, true, a->request.adapter.get());
    output_owner_.push_back(a.get());
    --budget;
  }
  for (const auto& a : active_) {
    if (!a->prefilling() || budget <= 0) continue;
    const auto prompt_len = static_cast<int64_t>(a->request.prompt.size());
    const int64_t take = std::min(budget, prompt_len - a->cursor);
    for (int64_t i = a->cursor; i < a->cursor + take; ++i) {
      const bool last = i + 1 == prompt_len;
      batch_.add(a->request.prompt[static_cast<size_t>(i)], static_cast<int32_t>(i), a->seq, last,
                 a->request.adapter.get());
      if (last) output_owner_.push_back(a.get());
    }
    a->cursor += take;
    budget -= take;
  }
  const std::span<const float> logits = model_.forward_logits(batch_, cache_);
  const int64_t V = model_.config().vocab_size;
  for (size_t row = 0; row < output_owner_.size(); ++row) {
    Active& a = *output_owner_[row];
    if (a.done) continue;  // cancelled by a callback earlier in this step
    const GenerateOptions& o = a.request.options;
    if (static_cast<int64_t>(a.result.tokens.size()) >= o.max_new_tokens) {
      finish(a, FinishReason::Length);
      continue;
    }
    const std::span<float> row_logits(const_cast<float*>(logits.data()) + static_cast<int64_t>(row) * V,
                                      static_cast<size_t>(V));
    // Embedding rows past the tokenizer's vocabulary (padding, common in
    // Hugging Face checkpoints) are tokens nothing can print: never sample them.
    if (decodable_ < V) std::fill(row_logits.begin() + decodable_, row_logits.end(), -INFINITY);
    if (o.logprobs > 0) a.result.logprobs.push_back(top_logprobs(row_logits, o.logprobs));
    if (o.token_logprobs) raw_logits_.assign(row_logits.begin(), row_logits.end());
    const int32_t id = a.sampler.sample(row_logits, a.history, a.result.tokens);
    if (o.token_logprobs) a.result.token_logprobs.push_back(token_logprob(raw_logits_, id));
    if (a.result.tokens.empty()) {
      a.first_token = std::chrono::steady_clock::now();
      a.result.prefill_seconds = seconds_between(a.admitted, a.first_token);
    }
    a.result.tokens.push_back(id);
    a.history.push_back(id);
    if (!o.ignore_eos && std::find(o.eos_ids.begin(), o.eos_ids.end(), id) != o.eos_ids.end()) {
      finish(a, FinishReason::Eos);
      continue;
    }
    bool stopped = false;
    a.emit(a.stop_filter.push(a.stream.push(id), stopped));
    if (stopped) {
      finish(a, FinishReason::Stop);
    } else if (static_cast<int64_t>(a.result.tokens.size()) >= o.max_new_tokens) {
      finish(a, FinishReason::Length);
    } else if (cache_.length(a.seq) >= context_) {
      finish(a, FinishReason::Context);
    } else {
      a.pending = id;
    }
  }
  std::erase_if(active_, [](const auto& a) { return a->done; });
  return !active_.empty() || !waiting_.empty();
}

void Engine::run() {
  while (step()) {
  }
}

}  // namespace slm
