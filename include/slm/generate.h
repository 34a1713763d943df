// Generation: the sampler and the loop that turns a prompt into new tokens,
// streaming text as it becomes final.
#pragma once

#include <slm/model.h>
#include <slm/random.h>
#include <slm/tokenizer.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

struct SamplingParams {
  double temperature = 1.0;         // 0: greedy
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // 1: off
  double min_p = 0.0;               // 0: off
  double repetition_penalty = 1.0;  // 1: off
  // OpenAI's: each generated token's logit minus frequency_penalty times how
  // often it was generated, minus presence_penalty once it was (0: off).
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  uint64_t seed = 0;
};

// Applies, in the order Hugging Face's generate() does: repetition penalty
// (then OpenAI's frequency and presence penalties), then temperature, top-k,
// top-p, min-p; then draws one token.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // `logits` is modified in place. `history` holds the prompt and the tokens
  // generated so far; `generated` those generated alone (its tail).
  int32_t sample(std::span<float> logits, std::span<const int32_t> history, std::span<const int32_t> generated = {});
  // The probabilities sample() draws from (after every transform), for tests.
  std::vector<float> distribution(std::span<float> logits, std::span<const int32_t> history,
                                  std::span<const int32_t> generated = {}) const;

 private:
  SamplingParams params_;
  Rng rng_;
};

struct TokenLogprob {
  int32_t id;
  float logprob;
};

// Length: max_new_tokens reached; Eos: an end-of-sequence token; Stop: a
// stop string; Context: the model's context is full; Cancelled: stopped by
// the caller.
enum class FinishReason { Length, Eos, Stop, Context, Cancelled };
std::string_view finish_reason_name(FinishReason reason);

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> eos_ids;  // stop at any of these unless ignore_eos
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  int64_t logprobs = 0;  // top-K log-softmax of the raw logits per generated token
  bool token_logprobs = false;  // the log-softmax of the raw logits at each generated token
  DType kv_dtype = DType::F32;
};

struct GenerationResult {
  std::string text;
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;
  FinishReason finish_reason = FinishReason::Length;
  std::vector<std::vector<TokenLogprob>> logprobs;
  std::vector<float> token_logprobs;  // with GenerateOptions::token_logprobs, one per token
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// One request through the engine (slm/engine.h): the prompt as one batch,
// then one token at a time. `on_text` receives text as it becomes final
// (complete UTF-8, stop strings held back).
GenerationResult generate(const Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerateOptions& options, const std::function<void(std::string_view)>& on_text = {},
                          std::shared_ptr<const Adapter> adapter = nullptr);

// The K most likely tokens of log_softmax(logits), most likely first.
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int64_t k);
// log_softmax(logits)[id].
float token_logprob(std::span<const float> logits, int32_t id);

}  // namespace slm

namespace slm {

struct PerplexityResult {
  int64_t tokens = 0;     // tokens predicted (every token but the first)
  double mean_nll = 0;    // mean negative log-likelihood, nats
  double perplexity = 0;  // exp(mean_nll)
};

// Scores `ids` in windows of `context` tokens; consecutive windows overlap by
// one token so every token but the first is predicted exactly once.
PerplexityResult perplexity(const Model& model, std::span<const int32_t> ids, int64_t context,
                            const Adapter* adapter = nullptr);

}  // namespace slm
