#include <slm/error.h>
#include <slm/generate.h>

#include "backend/backend.h"

#include <algorithm>
#include <cmath>

namespace slm {

PerplexityResult perplexity(const Model& model, std::span<const int32_t> ids, int64_t context, const Adapter* adapter) {
  const ModelConfig& config = model.config();
  if (ids.size() < 2) fail("perplexity needs at least 2 tokens, got ", ids.size());
  if (context < 2) fail("--ctx must be at least 2, got ", context);
  context = std::min(context, config.max_position_embeddings);
  KVCache cache(config, context);
  const auto total = static_cast<int64_t>(ids.size());
  double nll = 0;
  int64_t count = 0;
  for (int64_t start = 0; start + 1 < total; start += context - 1) {
    const int64_t length = std::min(context, total - start);
    cache.clear();
    const std::span<const float> hidden =
        model.forward(ids.subspan(static_cast<size_t>(start), static_cast<size_t>(length)), cache, adapter);
    // Row r predicts the token after it; the window's last row predicts nothing here.
    const std::span<const int32_t> targets = ids.subspan(static_cast<size_t>(start + 1), static_cast<size_t>(length - 1));
    nll += model.backend().cross_entropy(hidden.data(), length - 1, model.weights().lm_head,
                                         static_cast<float>(model.config().final_logit_softcapping), targets.data(), 1.0f,
                                         nullptr, nullptr);
    count += length - 1;
  }
  PerplexityResult result;
  result.tokens = count;
  result.mean_nll = nll / static_cast<double>(count);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace slm
