#include <slm/error.h>
#include <slm/generate.h>

#include <algorithm>
#include <chrono>

namespace slm {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
  const std::vector<std::string>& stops_;
  std::string pending_;
};

}  // namespace

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::Length: return "length";
    case FinishReason::Eos: return "eos";
    case FinishReason::Stop: return "stop";
  }
  return "?";
}

GenerationResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerateOptions& options, const std::function<void(std::string_view)>& on_text) {
  const ModelConfig& config = model.config();
  if (prompt.empty()) fail("the prompt is empty (no tokens to start from)");
  if (options.max_new_tokens < 0) fail("--max-new-tokens must be >= 0, got ", options.max_new_tokens);
  const auto prompt_len = static_cast<int64_t>(prompt.size());
  if (prompt_len > config.max_position_embeddings) {
    fail("the prompt has ", prompt_len, " tokens but the model's context is ", config.max_position_embeddings,
         " (max_position_embeddings); shorten it or pass --truncate");
  }

  GenerationResult result;
  result.prompt_tokens.assign(prompt.begin(), prompt.end());
  const int64_t capacity = std::min(config.max_position_embeddings, prompt_len + std::max<int64_t>(options.max_new_tokens, 1));
  KVCache cache(config, capacity, options.kv_dtype);
  Sampler sampler(options.sampling);
  StreamDecoder stream(tokenizer, options.skip_special_tokens);
  StopFilter stop_filter(options.stop_strings);
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits;

  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    result.text += text;
    if (on_text) on_text(text);
  };

  const auto prefill_start = std::chrono::steady_clock::now();
  const std::span<const float> first = model.forward_last_logits(prompt, cache);
  logits.assign(first.begin(), first.end());
  result.prefill_seconds = seconds_since(prefill_start);

  const auto decode_start = std::chrono::steady_clock::now();
  bool stopped = false;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    if (options.logprobs > 0) result.logprobs.push_back(top_logprobs(logits, options.logprobs));
    const int32_t id = sampler.sample(logits, history);
    result.tokens.push_back(id);
    history.push_back(id);
    if (!options.ignore_eos && std::find(options.eos_ids.begin(), options.eos_ids.end(), id) != options.eos_ids.end()) {
      result.finish_reason = FinishReason::Eos;
      break;
    }
    emit(stop_filter.push(stream.push(id), stopped));
    if (stopped) {
      result.finish_reason = FinishReason::Stop;
      break;
    }
    if (step + 1 == options.max_new_tokens || cache.length() >= cache.capacity()) break;
    const int32_t next[1] = {id};
    const std::span<const float> out = model.forward_last_logits(next, cache);
    logits.assign(out.begin(), out.end());
  }
  if (!stopped) {
    emit(stop_filter.push(stream.finish(), stopped));
    if (stopped) {
      result.finish_reason = FinishReason::Stop;
    } else {
      emit(stop_filter.flush());
    }
  }
  result.decode_seconds = seconds_since(decode_start);
  return result;
}

}  // namespace slm
