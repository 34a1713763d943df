// Decoding against the KV cache equals recomputing the whole sequence, and
// perplexity equals the mean negative log-likelihood computed by hand — on
// small random models written by create_random_model (no tokenizer needed).
#include <slm/error.h>
#include <slm/generate.h>
#include <slm/model.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using slm::AttentionImpl;
using slm::KVCache;
using slm::Model;

// Logits of the last position, recomputed from scratch for the whole sequence.
std::vector<float> recompute(Model& model, const std::vector<int32_t>& tokens) {
  KVCache cache(model.config(), static_cast<int64_t>(tokens.size()));
  const auto out = model.forward_last_logits(tokens, cache);
  return {out.begin(), out.end()};
}

class Decode : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("slm_decode_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Model make(const std::string& arch, int64_t window = 0) {
    slm::ModelConfig c = slm::shape_preset("tiny");
    c.model_type = arch;
    c.attention_bias = arch == "qwen2";
    c.qk_norm = arch == "qwen3";
    c.sliding_window = window;
    c.max_position_embeddings = 64;
    slm::CreateOptions options;
    options.seed = 11;
    options.init_std = 0.2;  // large enough that logits differ clearly between tokens
    slm::create_random_model(c, options, dir_ / arch);
    return Model::load(dir_ / arch);
  }

  fs::path dir_;
};

int32_t argmax(std::span<const float> v) { return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin()); }

void expect_close(std::span<const float> got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * scale) << what << " logit " << i;
  }
}

// Decodes 16 greedy tokens (chosen from the recomputed logits) against the
// cache, comparing each step's logits within tol × max|logit|; with an f32
// cache the cached path must also pick the same token.
void check_cache_equals_recompute(Model& model, AttentionImpl impl, slm::DType kv_dtype, double tol) {
  model.set_attention(impl);
  std::vector<int32_t> tokens{1, 17, 300, 42, 5, 5, 511};
  KVCache cache(model.config(), 32, kv_dtype);
  std::span<const float> logits = model.forward_last_logits(tokens, cache);
  for (int step = 0; step < 16; ++step) {
    const std::vector<float> want = recompute(model, tokens);
    expect_close(logits, want, tol, "step " + std::to_string(step));
    if (::testing::Test::HasFatalFailure()) return;
    const int32_t next = argmax(want);
    if (kv_dtype == slm::DType::F32) {
      ASSERT_EQ(argmax(logits), next) << "step " << step;
    }
    tokens.push_back(next);
    const int32_t one[1] = {next};
    logits = model.forward_last_logits(one, cache);
  }
  EXPECT_EQ(cache.length(), static_cast<int64_t>(tokens.size()));
}

TEST_F(Decode, KvCacheEqualsRecomputationForEveryArchitecture) {
  for (const char* arch : {"llama", "qwen2", "qwen3"}) {
    SCOPED_TRACE(arch);
    Model model = make(arch);
    check_cache_equals_recompute(model, AttentionImpl::Flash, slm::DType::F32, 1e-4);
    check_cache_equals_recompute(model, AttentionImpl::Eager, slm::DType::F32, 1e-4);
  }
}

// A window of 4 over 23 positions: decoding must drop the same keys the full pass does.
TEST_F(Decode, SlidingWindowCacheEqualsRecomputation) {
  Model model = make("mistral", 4);
  check_cache_equals_recompute(model, AttentionImpl::Flash, slm::DType::F32, 1e-4);
  check_cache_equals_recompute(model, AttentionImpl::Eager, slm::DType::F32, 1e-4);
}

// 20 units of the format's roundoff (2^-8 for bf16, 2^-11 for f16), the bound
// docs/testing.md gives the parity tests.
TEST_F(Decode, HalfPrecisionCacheStaysClose) {
  Model model = make("llama");
  check_cache_equals_recompute(model, AttentionImpl::Flash, slm::DType::BF16, 20 * 0x1p-8);
  check_cache_equals_recompute(model, AttentionImpl::Eager, slm::DType::F16, 20 * 0x1p-11);
}

TEST_F(Decode, ChunkedPrefillEqualsOnePass) {
  Model model = make("qwen2");
  const std::vector<int32_t> tokens{3, 9, 27, 81, 243, 217, 139, 417, 227, 169, 7};
  const std::vector<float> want = recompute(model, tokens);
  KVCache cache(model.config(), 16);
  model.forward(std::span(tokens).first(4), cache);
  model.forward(std::span(tokens).subspan(4, 5), cache);
  const auto got = model.forward_last_logits(std::span(tokens).subspan(9), cache);
  expect_close(got, want, 1e-4, "chunked");
}

TEST_F(Decode, ForwardRejectsBadInput) {
  Model model = make("llama");
  KVCache cache(model.config(), 4, slm::DType::F32, 4);  // one block of four positions
  const std::vector<int32_t> too_many{1, 2, 3, 4, 5};
  EXPECT_THROW(model.forward(too_many, cache), slm::Error);
  const std::vector<int32_t> out_of_vocab{1, 512};
  EXPECT_THROW(model.forward(out_of_vocab, cache), slm::Error);
  const std::vector<int32_t> negative{-1};
  EXPECT_THROW(model.forward(negative, cache), slm::Error);
  EXPECT_EQ(cache.length(), 0);  // a rejected call leaves the cache as it was
  EXPECT_THROW(KVCache(model.config(), 0), slm::Error);
  EXPECT_THROW(cache.set_length(5), slm::Error);
}

// Mean NLL by hand from all-position logits of one pass per window.
double manual_nll(Model& model, const std::vector<int32_t>& ids, int64_t context, int64_t& count) {
  const int64_t V = model.config().vocab_size, H = model.config().hidden_size;
  double nll = 0;
  count = 0;
  const auto total = static_cast<int64_t>(ids.size());
  for (int64_t start = 0; start + 1 < total; start += context - 1) {
    const int64_t length = std::min(context, total - start);
    KVCache cache(model.config(), length);
    const std::vector<int32_t> window(ids.begin() + start, ids.begin() + start + length);
    const auto hidden = model.forward(window, cache);
    std::vector<float> logits(size_t(length * V));
    model.logits(hidden, length, logits);
    for (int64_t r = 0; r + 1 < length; ++r) {
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(logits[size_t(r * V + v)]));
      nll += std::log(z) - logits[size_t(r * V + ids[size_t(start + r + 1)])];
      ++count;
    }
    (void)H;
  }
  return nll / double(count);
}

TEST_F(Decode, PerplexityEqualsHandComputedNll) {
  Model model = make("llama");
  std::vector<int32_t> ids;
  for (int i = 0; i < 45; ++i) ids.push_back((i * 37 + 11) % 512);
  for (int64_t context : {64, 45, 8, 2}) {
    int64_t count = 0;
    const double want = manual_nll(model, ids, context, count);
    const slm::PerplexityResult got = slm::perplexity(model, ids, context);
    EXPECT_EQ(got.tokens, 44) << context;  // every token but the first, exactly once
    EXPECT_EQ(count, 44);
    EXPECT_NEAR(got.mean_nll, want, 1e-5 * want) << context;
    EXPECT_NEAR(got.perplexity, std::exp(want), 1e-5 * std::exp(want)) << context;
  }
  EXPECT_THROW(slm::perplexity(model, std::vector<int32_t>{1}, 8), slm::Error);
  EXPECT_THROW(slm::perplexity(model, ids, 1), slm::Error);
}

}  // namespace
