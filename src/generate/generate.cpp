#include <slm/error.h>
#include <slm/engine.h>
#include <slm/generate.h>

#include <algorithm>

namespace slm {

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::Length: return "length";
    case FinishReason::Eos: return "eos";
    case FinishReason::Stop: return "stop";
    case FinishReason::Context: return "context";
    case FinishReason::Cancelled: return "cancelled";
  }
  return "?";
}

GenerationResult generate(const Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerateOptions& options, const std::function<void(std::string_view)>& on_text,
                          std::shared_ptr<const Adapter> adapter) {
  const ModelConfig& config = model.config();
  const auto prompt_len = static_cast<int64_t>(prompt.size());
  // One sequence: a pool just large enough, the prompt as one chunk.
  EngineOptions engine_options;
  engine_options.max_sequences = 1;
  engine_options.kv_dtype = options.kv_dtype;
  engine_options.kv_cache_tokens =
      std::max<int64_t>(1, std::min(config.max_position_embeddings, prompt_len + std::max<int64_t>(options.max_new_tokens, 1)));
  engine_options.max_batch_tokens = std::max<int64_t>(1, prompt_len);
  Engine engine(model, tokenizer, engine_options);
  GenerationResult result;
  Request request{{prompt.begin(), prompt.end()}, options, std::move(adapter), on_text,
                  [&](const GenerationResult& done) { result = done; }};
  engine.add_request(std::move(request));
  engine.run();
  return result;
}

}  // namespace slm
