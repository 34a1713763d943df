// Model parity: the C++ decoder against the PyTorch reference
// (tests/reference/llama_reference.py) on small random models that cover every
// option of the Llama family. The fixtures (model folders and the expected.json
// the reference wrote for each) are made by tests/parity/make_fixtures.sh, which
// ctest runs first; SLM_PARITY_DIR names the folder it filled. See
// docs/testing.md for the tolerances and why they are what they are.
#include <slm/generate.h>
#include <slm/model.h>

#include "backend/cpu/simd.h"
#include "fixture_list.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using slm::AttentionImpl;
using slm::KVCache;
using slm::Model;

// Relative tolerances (max|a - b| / max|b| over a logit row), from issue 2.
// f32 and f16 weights: only float32 rounding separates libslm from the
// float64 reference (f16 widens to f32 exactly and no kernel rounds
// activations to f16); measured errors are ~1e-6 for both, so 1e-4 is a
// hundredfold margin. bf16 weights: the reference uses the same stored
// weights, so the allowance is for the kernels' own rounding (on
// AVX512-BF16 every product with bf16 weights, prefill and decode, rounds
// its input activations to bf16, as bf16 engines do). Measured there: last
// prompt row up to 0.89e-2, last greedy step 1.05e-2 (llama_bf16) and
// 0.96e-2 (phi3_bf16), so 1.5e-2.
constexpr double kF32Tolerance = 1e-4;
constexpr double kBf16Tolerance = 1.5e-2;
// bf16 prefill rounds every matrix product's input activations to bf16 (unit
// roundoff u = 2^-8); the fixtures amplify a perturbation about tenfold, so
// rows inside the prompt are held to 10u. The last row keeps kBf16Tolerance.
constexpr double kBf16ActivationTolerance = 10.0 / 256;
// Eager and flash attention differ only in summation order (~1e-7); with
// bf16 prefill that difference can tip an activation across a bf16 rounding
// boundary (a step of u), so bf16 models get the low-precision bound there.
constexpr double kEagerFlashTolerance = 1e-4;
// bf16 weights held to the reference of the active path: on AVX512-BF16 the
// reference that rounds each product's input to bf16 as slm does
// (expected_bf16_activations.json), elsewhere the plain one (no path below
// it rounds activations). A row then differs from it by f32 rounding alone
// (measured 5e-8 to 1.8e-7 on AVX512-BF16, Zen 5; 2e-7 to 1.6e-6 on avx2 and
// scalar), except where that ~1e-7 tips one activation across a bf16
// rounding step: the row then moves by one such step amplified (measured on
// 1 to 8 of 24 prompt rows per bf16 fixture, 1.3e-4 to 3.55e-3). So at
// least a quarter of the rows must be exact to 1e-5, which a rounding done
// elsewhere or otherwise than slm does fails on every row (plain reference:
// 1.8e-3 to 1.45e-2), and every row within 5e-3 (avx2/scalar: 1e-4).
constexpr double kBf16PathExact = 1e-5;
constexpr double kBf16PathTipped = 5e-3;

// Every model make_fixtures.sh writes; keep the two lists in step.
const char* const kModels[] = {
    "llama_gqa",          // GQA 4:2, untied lm_head
    "llama_rope_llama3",  // llama3 rope scaling, tied embeddings
    "llama_rope_linear",  // linear rope scaling
    "llama_bias",         // llama with attention_bias
    "qwen2",              // q/k/v bias
    "qwen3",              // per-head q/k norm, head_dim != hidden/heads
    "qwen3_window",       // use_sliding_window with max_window_layers = 1 of 2
    "mistral_window",     // sliding window much shorter than the sequence
    "llama_bf16",         // bf16 weights kept as bf16
    "llama_f16",          // f16 weights
    "llama_sharded",      // three shards + model.safetensors.index.json
    "gemma3",             // Gemma 3: q/k norm, local rope base, windowed and full layers, linear scaling
    "gemma3_bf16",        // Gemma 3 in bf16 (the embedding scale rounded to bf16)
    "gemma2",             // Gemma 2: attention and final soft caps, window on even layers
    "phi3",               // Phi-3: fused qkv_proj and gate_up_proj, window on every layer
    "phi3_bf16",          // Phi-3 in bf16: the fused tensors split into bf16 views
    "phi3_longrope",      // longrope, short factors and the attention factor (56 tokens of an original 4096)
    "phi3_longrope_long", // longrope past an original context of 16: the long factors
};

// The fixtures above with bf16 weights (Bf16Parity).
const char* const kBf16Models[] = {"llama_bf16", "gemma3_bf16", "phi3_bf16"};

struct Expected {
  std::vector<int32_t> prompt;
  std::vector<float> last_logits;
  std::vector<std::vector<float>> prompt_logits;  // every prompt position
  std::vector<int32_t> greedy;
  std::vector<double> margins;
  std::vector<float> greedy_last_logits;
  double nll = 0, perplexity = 0;
  bool bf16 = false;  // weights stored as bf16
};

Expected read_expected(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": missing (did make_fixtures.sh run?)");
  const nlohmann::json j = nlohmann::json::parse(in);
  Expected e;
  e.prompt = j.at("prompt_ids").get<std::vector<int32_t>>();
  e.last_logits = j.at("last_logits").get<std::vector<float>>();
  e.prompt_logits = j.at("prompt_logits").get<std::vector<std::vector<float>>>();
  e.greedy = j.at("greedy_ids").get<std::vector<int32_t>>();
  e.margins = j.at("greedy_margins").get<std::vector<double>>();
  e.greedy_last_logits = j.at("greedy_last_logits").get<std::vector<float>>();
  e.nll = j.at("nll").get<double>();
  e.perplexity = j.at("perplexity").get<double>();
  for (const auto& d : j.at("weight_dtypes")) {
    e.bf16 |= d.get<std::string>() == "BF16";
  }
  return e;
}

// max|a - b| / max|b|: one number per logit row, insensitive to the scale of
// the logits and not blown up by entries near zero.
double relative_error(std::span<const float> a, std::span<const float> b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

double max_abs(std::span<const float> v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

// Records a measured error in the test's XML result, and prints it when
// SLM_PARITY_VERBOSE is set, so tolerances can be judged against real margins.
void report(const std::string& what, double value) {
  ::testing::Test::RecordProperty(what, std::to_string(value));
  if (std::getenv("SLM_PARITY_VERBOSE") != nullptr) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::printf("  %s/%s: %s = %.3g\n", info->name(), info->value_param(), what.c_str(), value);
  }
}

int32_t argmax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// Logits of every position of `tokens`, computed in chunks of `chunk` tokens
// against one cache (chunk >= tokens.size(): one prefill; 1: token by token).
// Where longrope's original context is shorter than the sequence, the first
// piece already reaches past it: the factors follow the length of each call
// (as in transformers), so pieces within it would rotate by the short ones.
std::vector<float> all_logits(Model& model, std::span<const int32_t> tokens, int64_t chunk) {
  const slm::ModelConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size()), vocab = c.vocab_size;
  const bool long_factors = c.rope_scaling == slm::RopeScaling::LongRope && n > c.rope_original_max_position_embeddings;
  const int64_t first = long_factors ? std::max(chunk, c.rope_original_max_position_embeddings + 1) : chunk;
  KVCache cache(model.config(), n);
  std::vector<float> out(static_cast<size_t>(n * vocab));
  for (int64_t begin = 0; begin < n; begin += begin == 0 ? first : chunk) {
    const int64_t rows = std::min(begin == 0 ? first : chunk, n - begin);
    const auto hidden = model.forward(tokens.subspan(static_cast<size_t>(begin), static_cast<size_t>(rows)), cache);
    model.logits(hidden, rows, std::span<float>(out).subspan(static_cast<size_t>(begin * vocab)));
  }
  return out;
}

std::span<const float> row(const std::vector<float>& logits, int64_t vocab, int64_t i) {
  return std::span<const float>(logits).subspan(static_cast<size_t>(i * vocab), static_cast<size_t>(vocab));
}

// Prefills e.prompt, then decodes greedily one token at a time through the
// KV cache, held to the reference's tokens (it recomputed the whole sequence
// for every token) and to its last step's logits within `bound` (relative).
// A divergence is only forgiven where the reference's top two logits were
// closer than `bound` lets us tell apart (then the two sequences part ways
// and the comparison stops there).
void expect_greedy_matches(Model& model, const Expected& e, double bound, const std::string& report_name) {
  const int64_t total = static_cast<int64_t>(e.prompt.size() + e.greedy.size());
  KVCache cache(model.config(), total);
  std::span<const float> logits = model.forward_last_logits(e.prompt, cache);
  const double resolvable = 2 * bound * max_abs(e.last_logits);
  for (size_t step = 0; step < e.greedy.size(); ++step) {
    const int32_t token = argmax(logits);
    if (token != e.greedy[step]) {
      ASSERT_LT(e.margins[step], resolvable)
          << "greedy token " << step << ": got " << token << ", reference " << e.greedy[step]
          << " with a top-1/top-2 margin of " << e.margins[step] << " (well above the " << resolvable
          << " the bound allows)";
      std::printf("  greedy step %zu is a near tie (reference margin %.3g); compared up to there\n", step,
                  e.margins[step]);
      return;
    }
    if (step + 1 == e.greedy.size()) break;
    const int32_t next[] = {token};
    logits = model.forward_last_logits(next, cache);
  }
  const double error = relative_error(logits, e.greedy_last_logits);
  report(report_name, error);
  EXPECT_LE(error, bound) << "logits of the last greedy step, position " << total - 2;
}

class Parity : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("SLM_PARITY_DIR");
    if (dir == nullptr || *dir == '\0') {
      GTEST_SKIP() << "SLM_PARITY_DIR is not set: run through ctest (-R model_parity), which makes the fixtures first";
    }
    root_ = fs::path(dir) / GetParam();
    if (fs::exists(root_ / "error.txt")) {
      std::ifstream in(root_ / "error.txt");
      std::stringstream text;
      text << in.rdbuf();
      FAIL() << "fixture " << GetParam() << " could not be made: " << text.str();
    }
    expected_ = read_expected(root_ / "expected.json");
    model_ = std::make_unique<Model>(Model::load(root_ / "model"));
    vocab_ = model_->config().vocab_size;
    tolerance_ = expected_.bf16 ? kBf16Tolerance : kF32Tolerance;
    row_tolerance_ = expected_.bf16 ? kBf16ActivationTolerance : tolerance_;
    ASSERT_EQ(static_cast<int64_t>(expected_.last_logits.size()), vocab_);
  }

  // Prompt followed by the reference's greedy continuation.
  std::vector<int32_t> full_sequence() const {
    std::vector<int32_t> s = expected_.prompt;
    s.insert(s.end(), expected_.greedy.begin(), expected_.greedy.end());
    return s;
  }

  fs::path root_;
  Expected expected_;
  std::unique_ptr<Model> model_;
  int64_t vocab_ = 0;
  double tolerance_ = 0;      // last prompt row, greedy step, perplexity
  double row_tolerance_ = 0;  // any row of a prefill
};

TEST_P(Parity, LastLogitsMatchReference) {
  for (const AttentionImpl impl : {AttentionImpl::Eager, AttentionImpl::Flash}) {
    const char* name = impl == AttentionImpl::Eager ? "eager" : "flash";
    SCOPED_TRACE(name);
    model_->set_attention(impl);
    KVCache cache(model_->config(), static_cast<int64_t>(expected_.prompt.size()));
    const auto logits = model_->forward_last_logits(expected_.prompt, cache);
    ASSERT_EQ(static_cast<int64_t>(logits.size()), vocab_);
    const double error = relative_error(logits, expected_.last_logits);
    report(std::string("last_logits_error_") + name, error);
    EXPECT_LE(error, tolerance_) << "max|logit| = " << max_abs(expected_.last_logits);
    EXPECT_EQ(cache.length(), static_cast<int64_t>(expected_.prompt.size()));
  }
}

// Prefill of the whole prompt: the logits of every position, not only the last.
TEST_P(Parity, PromptLogitsMatchReferenceAtEveryPosition) {
  const auto& e = expected_;
  const int64_t n = static_cast<int64_t>(e.prompt.size());
  ASSERT_EQ(static_cast<int64_t>(e.prompt_logits.size()), n);
  for (const AttentionImpl impl : {AttentionImpl::Eager, AttentionImpl::Flash}) {
    const char* name = impl == AttentionImpl::Eager ? "eager" : "flash";
    SCOPED_TRACE(name);
    model_->set_attention(impl);
    const std::vector<float> logits = all_logits(*model_, e.prompt, n);
    double worst = 0, sum = 0;
    int64_t worst_position = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double error = relative_error(row(logits, vocab_, i), e.prompt_logits[static_cast<size_t>(i)]);
      sum += error;
      if (error > worst) worst = error, worst_position = i;
    }
    report(std::string("prompt_logits_max_error_") + name, worst);
    report(std::string("prompt_logits_mean_error_") + name, sum / static_cast<double>(n));
    EXPECT_LE(worst, row_tolerance_) << "worst at position " << worst_position << " of " << n << "; mean "
                                 << sum / static_cast<double>(n);
  }
}

// Converting at load (--dtype f32) widens f16/bf16 weights exactly, so every
// model, whatever its file dtype, then matches the reference to f32 rounding.
TEST_P(Parity, LoadedAsF32MatchesReferenceTightly) {
  slm::LoadOptions as_f32;
  as_f32.dtype = slm::DType::F32;
  as_f32.device = "cpu";
  Model model = Model::load(root_ / "model", as_f32);
  ASSERT_EQ(model.dtype(), slm::DType::F32);
  KVCache cache(model.config(), static_cast<int64_t>(expected_.prompt.size()));
  const double error = relative_error(model.forward_last_logits(expected_.prompt, cache), expected_.last_logits);
  report("f32_last_logits_error", error);
  EXPECT_LE(error, kF32Tolerance);
}

// Greedy decoding through the KV cache against the reference, at the
// model's tolerance (expect_greedy_matches).
TEST_P(Parity, GreedyDecodingWithCacheMatchesReference) {
  report("min_greedy_margin", *std::min_element(expected_.margins.begin(), expected_.margins.end()));
  expect_greedy_matches(*model_, expected_, tolerance_, "greedy_last_logits_error");
}

TEST_P(Parity, EagerEqualsFlash) {
  const std::vector<int32_t> tokens = full_sequence();
  double worst = 0;
  for (const int64_t chunk : {static_cast<int64_t>(tokens.size()), int64_t{7}, int64_t{1}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    model_->set_attention(AttentionImpl::Eager);
    const std::vector<float> eager = all_logits(*model_, tokens, chunk);
    model_->set_attention(AttentionImpl::Flash);
    const std::vector<float> flash = all_logits(*model_, tokens, chunk);
    for (int64_t i = 0; i < static_cast<int64_t>(tokens.size()); ++i) {
      const double error = relative_error(row(flash, vocab_, i), row(eager, vocab_, i));
      worst = std::max(worst, error);
      ASSERT_LE(error, expected_.bf16 ? kBf16Tolerance : kEagerFlashTolerance) << "position " << i;
    }
  }
  report("eager_vs_flash_error", worst);
}

// Feeding the sequence through the cache in pieces (one token at a time, or
// chunks that straddle the sliding window) gives the logits of one prefill.
// With bf16 weights, prefill may round activations where decode does not;
// each is within the tolerance of the reference, so of each other within twice it.
TEST_P(Parity, CachedDecodingEqualsRecomputation) {
  const std::vector<int32_t> tokens = full_sequence();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const double tolerance = expected_.bf16 ? 2 * row_tolerance_ : tolerance_;
  double worst = 0;
  for (const AttentionImpl impl : {AttentionImpl::Eager, AttentionImpl::Flash}) {
    SCOPED_TRACE(impl == AttentionImpl::Eager ? "eager" : "flash");
    model_->set_attention(impl);
    const std::vector<float> whole = all_logits(*model_, tokens, n);
    for (const int64_t chunk : {int64_t{1}, int64_t{5}, int64_t{16}}) {
      SCOPED_TRACE("chunk " + std::to_string(chunk));
      const std::vector<float> pieces = all_logits(*model_, tokens, chunk);
      for (int64_t i = 0; i < n; ++i) {
        const double error = relative_error(row(pieces, vocab_, i), row(whole, vocab_, i));
        worst = std::max(worst, error);
        ASSERT_LE(error, tolerance) << "position " << i;
      }
    }
  }
  report("cache_vs_recompute_error", worst);
}

// A KV cache stored in f16 or bf16 (--kv-dtype) rounds keys and values once.
// How far that moves the logits is the format's unit roundoff u times how much
// the model amplifies a perturbation of its keys and values; these random
// fixtures amplify by about 10 (measured: f16 cache 2e-4 to 2e-3, bf16 cache
// 2e-3 to 2.3e-2), so the bound is 20u: 1e-2 for f16, 8e-2 for bf16. The
// comparison is with the same prefill and decode over an f32 cache, so that
// only the cache's rounding is measured (bf16 weights add their own,
// held to the reference by the tests above). A wrong row, position or scale
// in the cache moves logits by O(1) and still fails.
TEST_P(Parity, LowPrecisionKVCacheStaysClose) {
  const auto& e = expected_;
  const std::vector<int32_t> tokens = full_sequence();
  const size_t prompt = e.prompt.size();
  // Last prompt row and last decode step over a cache of `kv_dtype`.
  const auto run = [&](slm::DType kv_dtype) {
    KVCache cache(model_->config(), static_cast<int64_t>(tokens.size()), kv_dtype);
    std::span<const float> logits = model_->forward_last_logits(std::span(tokens).first(prompt), cache);
    std::vector<float> prefill(logits.begin(), logits.end());
    for (size_t i = prompt; i + 1 < tokens.size(); ++i) logits = model_->forward_last_logits(std::span(tokens).subspan(i, 1), cache);
    return std::pair(prefill, std::vector<float>(logits.begin(), logits.end()));
  };
  const auto [f32_prefill, f32_decode] = run(slm::DType::F32);
  for (const slm::DType kv_dtype : {slm::DType::F16, slm::DType::BF16}) {
    const std::string name = kv_dtype == slm::DType::F16 ? "f16" : "bf16";
    SCOPED_TRACE("kv cache " + name);
    const auto [prefill, decode] = run(kv_dtype);
    const double prefill_error = relative_error(prefill, f32_prefill);
    const double decode_error = relative_error(decode, f32_decode);
    report("kv_" + name + "_prefill_error", prefill_error);
    report("kv_" + name + "_decode_error", decode_error);
    const double unit_roundoff = kv_dtype == slm::DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    EXPECT_LE(prefill_error, 20 * unit_roundoff);
    EXPECT_LE(decode_error, 20 * unit_roundoff);
  }
}

// Truncating the cache and decoding again gives the same logits as the first
// time: nothing beyond length() leaks into attention.
TEST_P(Parity, TruncatedCacheIsReusable) {
  const std::vector<int32_t> tokens = full_sequence();
  const size_t prompt = expected_.prompt.size();
  KVCache cache(model_->config(), static_cast<int64_t>(tokens.size()));
  model_->forward(std::span(tokens).first(prompt), cache);
  const auto first_logits = model_->forward_last_logits(std::span(tokens).subspan(prompt, 4), cache);
  const std::vector<float> first(first_logits.begin(), first_logits.end());
  // Overwrite the slots with other tokens, then go back.
  model_->forward(std::span(tokens).subspan(prompt + 4, 8), cache);
  cache.set_length(static_cast<int64_t>(prompt));
  const auto again = model_->forward_last_logits(std::span(tokens).subspan(prompt, 4), cache);
  EXPECT_LE(relative_error(again, first), 1e-6);
}

// slm::perplexity itself (what `slm perplexity` runs), over the prompt in one
// window, against the reference's mean NLL of the same tokens.
TEST_P(Parity, PerplexityMatchesReference) {
  const auto& prompt = expected_.prompt;
  const slm::PerplexityResult result = slm::perplexity(*model_, prompt, static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(result.tokens, static_cast<int64_t>(prompt.size()) - 1);
  const double error = std::abs(result.perplexity - expected_.perplexity) / expected_.perplexity;
  report("perplexity_error", error);
  EXPECT_LE(error, tolerance_) << "perplexity " << result.perplexity << " vs " << expected_.perplexity << " (nll "
                               << result.mean_nll << " vs " << expected_.nll << ")";
  EXPECT_NEAR(std::exp(result.mean_nll), result.perplexity, 1e-12 * result.perplexity);
}

// A bf16 model against the reference of the path it runs on (see
// kBf16PathExact): every prompt row, eager and flash, and the greedy
// continuation through the KV cache, which that reference chose for itself.
class Bf16Parity : public Parity {};

TEST_P(Bf16Parity, MatchesTheReferenceOfItsPath) {
  ASSERT_TRUE(expected_.bf16) << GetParam() << " is listed in kBf16Models but its weights are not bf16";
  const bool rounds = slm::cpu::bf16_gemm_kernels() != nullptr;
  const Expected e = read_expected(root_ / (rounds ? "expected_bf16_activations.json" : "expected.json"));
  const double bound = rounds ? kBf16PathTipped : kF32Tolerance;
  const int64_t n = static_cast<int64_t>(e.prompt.size());
  for (const AttentionImpl impl : {AttentionImpl::Eager, AttentionImpl::Flash}) {
    const char* name = impl == AttentionImpl::Eager ? "eager" : "flash";
    SCOPED_TRACE(std::string(name) + (rounds ? ", bf16 activations" : ", f32 activations"));
    model_->set_attention(impl);
    const std::vector<float> logits = all_logits(*model_, e.prompt, n);
    double worst = 0;
    int64_t exact = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double error = relative_error(row(logits, vocab_, i), e.prompt_logits[static_cast<size_t>(i)]);
      worst = std::max(worst, error);
      exact += error <= kBf16PathExact;
      EXPECT_LE(error, bound) << "prompt position " << i;
    }
    report(std::string("path_prompt_logits_max_error_") + name, worst);
    report(std::string("path_prompt_rows_exact_") + name, static_cast<double>(exact) / static_cast<double>(n));
    EXPECT_GE(4 * exact, n) << exact << " of " << n << " prompt rows within " << kBf16PathExact;
  }
  expect_greedy_matches(*model_, e, bound, "path_greedy_last_logits_error");
}

TEST(ParityFixtures, ModelListIsTheScripts) { slm::test::expect_fixture_list("SLM_PARITY_DIR", kModels); }

// Every fixture with bf16 weights, and only those, in kBf16Models.
TEST(ParityFixtures, Bf16ListIsTheBf16Fixtures) {
  const char* dir = std::getenv("SLM_PARITY_DIR");
  if (dir == nullptr || *dir == '\0') GTEST_SKIP() << "SLM_PARITY_DIR is not set";
  for (const char* name : kModels) {
    const fs::path expected = fs::path(dir) / name / "expected.json";
    if (!fs::exists(expected)) continue;  // a fixture that could not be made fails its own tests
    const bool listed = std::find_if(std::begin(kBf16Models), std::end(kBf16Models), [&](const char* bf16) {
                          return std::string(bf16) == name;
                        }) != std::end(kBf16Models);
    EXPECT_EQ(read_expected(expected).bf16, listed) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Parity, ::testing::ValuesIn(kModels),
                         [](const ::testing::TestParamInfo<const char*>& param) { return std::string(param.param); });
INSTANTIATE_TEST_SUITE_P(Models, Bf16Parity, ::testing::ValuesIn(kBf16Models),
                         [](const ::testing::TestParamInfo<const char*>& param) { return std::string(param.param); });

}  // namespace
