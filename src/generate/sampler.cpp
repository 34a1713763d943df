#include <slm/error.h>
#include <slm/generate.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace slm {

namespace {

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> history, double penalty) {
  if (penalty == 1.0) return;
  const auto p = static_cast<float>(penalty);
  // Each distinct token is penalised once, as Hugging Face's gather/scatter does.
  std::vector<int32_t> seen(history.begin(), history.end());
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  for (int32_t id : seen) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float& l = logits[static_cast<size_t>(id)];
    l = l > 0 ? l / p : l * p;
  }
}

void apply_openai_penalties(std::span<float> logits, std::span<const int32_t> generated, double frequency,
                            double presence) {
  if ((frequency == 0 && presence == 0) || generated.empty()) return;
  std::vector<int32_t> sorted(generated.begin(), generated.end());
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j < sorted.size() && sorted[j] == sorted[i]) ++j;
    const int32_t id = sorted[i];
    if (id >= 0 && static_cast<size_t>(id) < logits.size()) {
      logits[static_cast<size_t>(id)] -= static_cast<float>(frequency * static_cast<double>(j - i) + presence);
    }
    i = j;
  }
}

// The log of sum(exp(logits - max)), in double: folding it into a float
// max_logit first would round it to the ulp of the logits.
double log_sum_exp_shifted(std::span<const float> logits, float max_logit) {
  double total = 0;
  for (float l : logits) total += std::exp(static_cast<double>(l - max_logit));
  return std::log(total);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (!(params.temperature >= 0)) fail("--temperature must be >= 0, got ", params.temperature);
  if (params.top_k < 0) fail("--top-k must be >= 0, got ", params.top_k);
  if (!(params.top_p > 0 && params.top_p <= 1)) fail("--top-p must be in (0, 1], got ", params.top_p);
  if (!(params.min_p >= 0 && params.min_p <= 1)) fail("--min-p must be in [0, 1], got ", params.min_p);
  if (!(params.repetition_penalty > 0)) fail("--repeat-penalty must be > 0, got ", params.repetition_penalty);
  if (!std::isfinite(params.frequency_penalty)) fail("frequency_penalty must be a finite number");
  if (!std::isfinite(params.presence_penalty)) fail("presence_penalty must be a finite number");
}

std::vector<float> Sampler::distribution(std::span<float> logits, std::span<const int32_t> history,
                                         std::span<const int32_t> generated) const {
  apply_repetition_penalty(logits, history, params_.repetition_penalty);
  apply_openai_penalties(logits, generated, params_.frequency_penalty, params_.presence_penalty);
  const size_t V = logits.size();
  std::vector<float> probs(V, 0.0f);
  if (params_.temperature == 0) {
    probs[static_cast<size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin())] = 1.0f;
    return probs;
  }
  // Candidate ids; sorted most likely first (ties by id) only when top-k or
  // top-p need an order, since sorting a whole vocabulary costs milliseconds.
  std::vector<int32_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < V) {
    const auto k = static_cast<std::ptrdiff_t>(params_.top_k);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
    ids.resize(static_cast<size_t>(k));
  } else if (params_.top_p < 1.0) {
    std::sort(ids.begin(), ids.end(), by_logit);
  }
  const auto inv_t = 1.0 / params_.temperature;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(ids.size());
  double total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    p[i] = std::exp((static_cast<double>(logits[static_cast<size_t>(ids[i])]) - max_logit) * inv_t);
    total += p[i];
  }
  for (double& x : p) x /= total;
  size_t keep = ids.size();
  if (params_.top_p < 1.0) {
    // The smallest prefix whose mass reaches top_p, at least one token.
    double mass = 0;
    size_t n = 0;
    while (n < keep) {
      mass += p[n++];
      if (mass >= params_.top_p) break;
    }
    keep = n;
  }
  if (params_.min_p > 0) {
    const double threshold = params_.min_p * *std::max_element(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep));
    for (size_t i = 0; i < keep; ++i) {
      if (p[i] < threshold) p[i] = 0;
    }
  }
  total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  for (size_t i = 0; i < keep; ++i) probs[static_cast<size_t>(ids[i])] = static_cast<float>(p[i] / total);
  return probs;
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history, std::span<const int32_t> generated) {
  if (params_.temperature == 0) {
    apply_repetition_penalty(logits, history, params_.repetition_penalty);
    apply_openai_penalties(logits, generated, params_.frequency_penalty, params_.presence_penalty);
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const std::vector<float> probs = distribution(logits, history, generated);
  const double u = rng_.uniform();
  double cumulative = 0;
  int32_t last_nonzero = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0f) continue;
    cumulative += probs[i];
    last_nonzero = static_cast<int32_t>(i);
    if (u < cumulative) return last_nonzero;
  }
  return last_nonzero;
}

std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int64_t k) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  const double log_total = log_sum_exp_shifted(logits, max_logit);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t n = std::min(static_cast<size_t>(std::max<int64_t>(k, 0)), order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  });
  std::vector<TokenLogprob> out;
  for (size_t i = 0; i < n; ++i) {
    const double shifted = static_cast<double>(logits[static_cast<size_t>(order[i])]) - max_logit;
    out.push_back({order[i], static_cast<float>(shifted - log_total)});
  }
  return out;
}

float token_logprob(std::span<const float> logits, int32_t id) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  const double shifted = static_cast<double>(logits[static_cast<size_t>(id)]) - max_logit;
  return static_cast<float>(shifted - log_sum_exp_shifted(logits, max_logit));
}

}  // namespace slm
