// Sampler: the distribution each setting leaves on a fixed logit vector
// (support and probabilities worked out by hand), the repetition penalty,
// seeded draws, and draw frequencies against distribution().
#include <slm/error.h>
#include <slm/generate.h>

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <vector>

namespace {

using slm::Sampler;
using slm::SamplingParams;

// ids:                      0    1    2    3    4     5
const std::vector<float> kLogits{1.0f, 2.0f, 3.0f, 0.5f, 3.0f, -1.0f};

std::vector<float> distribution(const SamplingParams& params, std::vector<float> logits = kLogits,
                                const std::vector<int32_t>& history = {}) {
  const Sampler sampler(params);
  return sampler.distribution(logits, history);
}

SamplingParams with(double temperature, int64_t top_k = 0, double top_p = 1.0, double min_p = 0.0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  return p;
}

// p_i ∝ exp(l_i / T) over `support`, 0 elsewhere.
std::vector<double> expected(double temperature, const std::vector<int>& support) {
  std::vector<double> p(kLogits.size(), 0.0);
  double z = 0;
  for (int i : support) z += std::exp(kLogits[size_t(i)] / temperature);
  for (int i : support) p[size_t(i)] = std::exp(kLogits[size_t(i)] / temperature) / z;
  return p;
}

void expect_distribution(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (want[i] == 0) {
      EXPECT_EQ(got[i], 0.0f) << "id " << i << " must be outside the support";
    } else {
      EXPECT_NEAR(got[i], want[i], 1e-6) << "id " << i;
    }
  }
}

TEST(Sampler, TemperatureZeroIsArgmaxFirstOnTies) {
  expect_distribution(distribution(with(0)), {0, 0, 1, 0, 0, 0});
  Sampler sampler(with(0));
  for (int i = 0; i < 10; ++i) {
    std::vector<float> logits = kLogits;
    EXPECT_EQ(sampler.sample(logits, {}), 2);
  }
}

TEST(Sampler, PlainSoftmaxAtTemperatures) {
  expect_distribution(distribution(with(1.0)), expected(1.0, {0, 1, 2, 3, 4, 5}));
  expect_distribution(distribution(with(2.0)), expected(2.0, {0, 1, 2, 3, 4, 5}));
  expect_distribution(distribution(with(0.5)), expected(0.5, {0, 1, 2, 3, 4, 5}));
  // Hand value: Z = e + e² + 2e³ + e^0.5 + e^-1 = 52.29501.
  EXPECT_NEAR(distribution(with(1.0))[2], 20.085537 / 52.295011, 1e-6);
}

TEST(Sampler, TopK) {
  expect_distribution(distribution(with(1.0, 1)), {0, 0, 1, 0, 0, 0});  // the tie goes to the lower id
  expect_distribution(distribution(with(1.0, 2)), {0, 0, 0.5, 0, 0.5, 0});
  expect_distribution(distribution(with(1.0, 3)), expected(1.0, {1, 2, 4}));
  expect_distribution(distribution(with(0.7, 4)), expected(0.7, {0, 1, 2, 4}));
  expect_distribution(distribution(with(1.0, 6)), expected(1.0, {0, 1, 2, 3, 4, 5}));
  expect_distribution(distribution(with(1.0, 100)), expected(1.0, {0, 1, 2, 3, 4, 5}));  // k past the vocabulary
}

// Softmax at T=1, sorted: 0.38408, 0.38408, 0.14130, 0.05198, 0.03153, 0.00703.
TEST(Sampler, TopP) {
  expect_distribution(distribution(with(1.0, 0, 0.3)), {0, 0, 1, 0, 0, 0});  // at least one token
  expect_distribution(distribution(with(1.0, 0, 0.5)), {0, 0, 0.5, 0, 0.5, 0});
  expect_distribution(distribution(with(1.0, 0, 0.75)), {0, 0, 0.5, 0, 0.5, 0});  // 0.768 covers it
  expect_distribution(distribution(with(1.0, 0, 0.9)), expected(1.0, {1, 2, 4}));  // 0.9095
  expect_distribution(distribution(with(1.0, 0, 0.95)), expected(1.0, {0, 1, 2, 4}));  // 0.9614
  expect_distribution(distribution(with(1.0, 0, 0.999)), expected(1.0, {0, 1, 2, 3, 4, 5}));
  // top-p judges the tempered probabilities: at T=0.5, p(3)=0.46281 each (0.92562
  // together) and p(2)=0.06263.
  expect_distribution(distribution(with(0.5, 0, 0.9)), {0, 0, 0.5, 0, 0.5, 0});
  expect_distribution(distribution(with(0.5, 0, 0.93)), expected(0.5, {1, 2, 4}));
}

TEST(Sampler, MinP) {
  // Threshold min_p · 0.38408: 0.2 → 0.0768 keeps 3, 3, 2 (0.1413).
  expect_distribution(distribution(with(1.0, 0, 1.0, 0.2)), expected(1.0, {1, 2, 4}));
  // 0.1 → 0.0384 keeps 1 (0.0520) too, not 0.5 (0.0315).
  expect_distribution(distribution(with(1.0, 0, 1.0, 0.1)), expected(1.0, {0, 1, 2, 4}));
  expect_distribution(distribution(with(1.0, 0, 1.0, 1.0)), {0, 0, 0.5, 0, 0.5, 0});
  // min-p judges the tempered probabilities: at T=3 the ratios to the top are
  // 0.7165, 0.5134, 0.4346 and 0.2636 (id 5), so 0.2 keeps all and 0.27 drops id 5.
  expect_distribution(distribution(with(3.0, 0, 1.0, 0.2)), expected(3.0, {0, 1, 2, 3, 4, 5}));
  expect_distribution(distribution(with(3.0, 0, 1.0, 0.27)), expected(3.0, {0, 1, 2, 3, 4}));
}

TEST(Sampler, FiltersCompose) {
  // top-k 4 leaves {2,4,1,0}; top-p 0.9 of that renormalised set: 0.39955 each for 3s,
  // 0.14699 for 2 -> 0.7991 + 0.1470 ≥ 0.9 keeps {2,4,1}; min-p 0.5 then drops id 1.
  expect_distribution(distribution(with(1.0, 4, 0.9)), expected(1.0, {1, 2, 4}));
  expect_distribution(distribution(with(1.0, 4, 0.9, 0.5)), {0, 0, 0.5, 0, 0.5, 0});
}

TEST(Sampler, RepetitionPenaltyDividesPositiveMultipliesNegativeOncePerToken) {
  SamplingParams p = with(1.0);
  p.repetition_penalty = 2.0;
  std::vector<float> logits = kLogits;
  const Sampler sampler(p);
  // id 0 three times, 3 and 5 once; out-of-range ids are ignored.
  const std::vector<int32_t> history{0, 3, 0, 5, 0, 99, -1};
  const std::vector<float> probs = sampler.distribution(logits, history);
  EXPECT_EQ(logits, (std::vector<float>{0.5f, 2.0f, 3.0f, 0.25f, 3.0f, -2.0f}));
  std::vector<double> want(6);
  double z = 0;
  for (size_t i = 0; i < 6; ++i) z += std::exp(double(logits[i]));
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(probs[i], std::exp(double(logits[i])) / z, 1e-6);
  // Greedy sees the penalty too.
  SamplingParams greedy = with(0);
  greedy.repetition_penalty = 1.5;
  Sampler g(greedy);
  std::vector<float> close{3.0f, 2.9f};
  const std::vector<int32_t> seen{0};
  EXPECT_EQ(g.sample(close, seen), 1);
  // A penalty below 1 rewards repetition.
  SamplingParams reward = with(0);
  reward.repetition_penalty = 0.5;
  Sampler r(reward);
  std::vector<float> l2{2.9f, 3.0f};
  EXPECT_EQ(r.sample(l2, seen), 0);
}

// OpenAI's penalties count generated tokens only (not the prompt):
// logit - frequency * count - presence * (count > 0).
TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokens) {
  SamplingParams p = with(1.0);
  p.frequency_penalty = 0.5;
  p.presence_penalty = 0.25;
  const Sampler sampler(p);
  std::vector<float> logits{1.0f, 1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> history{3, 3, 3, 0, 0, 1};  // the prompt (3, 3, 3) and then 0, 0, 1
  const std::vector<int32_t> generated{0, 0, 1};
  const std::vector<float> probs = sampler.distribution(logits, history, generated);
  EXPECT_EQ(logits, (std::vector<float>{1.0f - 1.25f, 1.0f - 0.75f, 1.0f, 1.0f}));
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(probs[i], std::exp(double(logits[i])) / z, 1e-6);
  SamplingParams greedy = with(0);
  greedy.presence_penalty = 0.2;
  Sampler g(greedy);
  std::vector<float> close{3.0f, 2.9f};
  EXPECT_EQ(g.sample(close, history, std::vector<int32_t>{0}), 1);
  std::vector<float> again{3.0f, 2.9f};
  EXPECT_EQ(g.sample(again, history), 0) << "no generated tokens: no penalty";
}

TEST(Sampler, SameSeedSameDrawsDifferentSeedDifferent) {
  auto draws = [](uint64_t seed) {
    SamplingParams p = with(1.5);
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) {
      std::vector<float> logits = kLogits;
      out.push_back(s.sample(logits, {}));
    }
    return out;
  };
  EXPECT_EQ(draws(7), draws(7));
  EXPECT_NE(draws(7), draws(8));
}

// 20000 draws: each count within 5 binomial sigma of N·p, and tokens outside
// the support never drawn.
void check_frequencies(const SamplingParams& params) {
  const std::vector<float> probs = distribution(params);
  Sampler sampler(params);
  constexpr int kDraws = 20000;
  std::vector<int> counts(kLogits.size(), 0);
  for (int i = 0; i < kDraws; ++i) {
    std::vector<float> logits = kLogits;
    const int32_t id = sampler.sample(logits, {});
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 6);
    ++counts[size_t(id)];
  }
  for (size_t i = 0; i < counts.size(); ++i) {
    const double p = probs[i];
    if (p == 0) {
      EXPECT_EQ(counts[i], 0) << "id " << i;
      continue;
    }
    const double sigma = std::sqrt(kDraws * p * (1 - p));
    EXPECT_NEAR(counts[i], kDraws * p, 5 * sigma + 1) << "id " << i << " p " << p;
  }
}

TEST(Sampler, DrawFrequenciesMatchTheDistribution) {
  check_frequencies(with(1.0));
  check_frequencies(with(2.0));
  check_frequencies(with(1.0, 3));
  check_frequencies(with(1.0, 0, 0.95));
  check_frequencies(with(1.0, 0, 1.0, 0.1));
  SamplingParams seeded = with(0.8, 5, 0.99, 0.01);
  seeded.seed = 12345;
  check_frequencies(seeded);
}

TEST(Sampler, InvalidSettingsNameTheOption) {
  auto rejects = [](SamplingParams p, const std::string& option) {
    try {
      Sampler s(p);
    } catch (const slm::Error& e) {
      return std::string(e.what()).find(option) != std::string::npos;
    }
    return false;
  };
  SamplingParams p;
  p.temperature = -1;
  EXPECT_TRUE(rejects(p, "--temperature"));
  p = {};
  p.temperature = NAN;
  EXPECT_TRUE(rejects(p, "--temperature"));
  p = {};
  p.top_k = -1;
  EXPECT_TRUE(rejects(p, "--top-k"));
  p = {};
  p.top_p = 0;
  EXPECT_TRUE(rejects(p, "--top-p"));
  p.top_p = 1.5;
  EXPECT_TRUE(rejects(p, "--top-p"));
  p = {};
  p.min_p = 2;
  EXPECT_TRUE(rejects(p, "--min-p"));
  p = {};
  p.repetition_penalty = 0;
  EXPECT_TRUE(rejects(p, "--repeat-penalty"));
}

TEST(TopLogprobs, EqualLogSoftmaxMostLikelyFirst) {
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  const auto top = slm::top_logprobs(kLogits, 4);
  ASSERT_EQ(top.size(), 4u);
  const std::vector<int32_t> order{2, 4, 1, 0};  // the tie at 3.0: lower id first
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(top[i].id, order[i]);
    EXPECT_NEAR(top[i].logprob, kLogits[size_t(order[i])] - std::log(z), 1e-6);
  }
  EXPECT_EQ(slm::top_logprobs(kLogits, 100).size(), 6u);
  EXPECT_TRUE(slm::top_logprobs(kLogits, 0).empty());
  // Large logits: computed stably, not as log(exp(1000)).
  const std::vector<float> big{1000.0f, 999.0f};
  const auto b = slm::top_logprobs(big, 2);
  EXPECT_NEAR(b[0].logprob, -std::log1p(std::exp(-1.0)), 1e-5);
  EXPECT_NEAR(b[1].logprob, -1.0 - std::log1p(std::exp(-1.0)), 1e-5);
  // The probabilities of all V entries sum to 1.
  double total = 0;
  for (const auto& t : slm::top_logprobs(kLogits, 6)) total += std::exp(double(t.logprob));
  EXPECT_NEAR(total, 1.0, 1e-6);
}

}  // namespace
