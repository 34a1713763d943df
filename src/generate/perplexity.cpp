#include <slm/error.h>
#include <slm/generate.h>

#include <algorithm>
#include <cmath>

namespace slm {

PerplexityResult perplexity(Model& model, std::span<const int32_t> ids, int64_t context) {
  const ModelConfig& config = model.config();
  if (ids.size() < 2) fail("perplexity needs at least 2 tokens, got ", ids.size());
  if (context < 2) fail("--ctx must be at least 2, got ", context);
  context = std::min(context, config.max_position_embeddings);
  // Logits are produced a few rows at a time: a whole window's logits would
  // take context × vocab floats.
  constexpr int64_t kRowsPerBlock = 32;
  std::vector<float> logits(static_cast<size_t>(kRowsPerBlock * config.vocab_size));
  KVCache cache(config, context);
  const auto total = static_cast<int64_t>(ids.size());
  double nll = 0;
  int64_t count = 0;
  for (int64_t start = 0; start + 1 < total; start += context - 1) {
    const int64_t length = std::min(context, total - start);
    cache.clear();
    const std::span<const float> hidden = model.forward(ids.subspan(static_cast<size_t>(start), static_cast<size_t>(length)), cache);
    for (int64_t row0 = 0; row0 < length - 1; row0 += kRowsPerBlock) {
      const int64_t rows = std::min(kRowsPerBlock, length - 1 - row0);
      model.logits(hidden.subspan(static_cast<size_t>(row0 * config.hidden_size)), rows, logits);
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = logits.data() + r * config.vocab_size;
        const float max_logit = *std::max_element(row, row + config.vocab_size);
        double sum = 0;
        for (int64_t v = 0; v < config.vocab_size; ++v) sum += std::exp(static_cast<double>(row[v] - max_logit));
        const int32_t target = ids[static_cast<size_t>(start + row0 + r + 1)];
        nll += std::log(sum) + max_logit - row[target];
        ++count;
      }
    }
  }
  PerplexityResult result;
  result.tokens = count;
  result.mean_nll = nll / static_cast<double>(count);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace slm
