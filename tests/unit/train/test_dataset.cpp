// JSON-lines training data and batching, with a stand-in tokenizer (one id
// per byte, BOS = 1 with special tokens) so the rules are visible.
#include <slm/error.h>
#include <slm/train.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;

std::vector<int32_t> byte_tokens(std::string_view text, bool special) {
  std::vector<int32_t> ids;
  if (special) ids.push_back(1);
  for (unsigned char c : text) ids.push_back(static_cast<int32_t>(c));
  return ids;
}

fs::path write_file(const std::string& name, const std::string& text) {
  const fs::path dir = fs::path(SLM_BINARY_DIR) / "tests" / "dataset";
  fs::create_directories(dir);
  std::ofstream(dir / name) << text;
  return dir / name;
}

TEST(Dataset, TextAndPromptCompletionLines) {
  const fs::path file = write_file("mixed.jsonl", "{\"text\": \"ab\"}\n\n{\"prompt\": \"Q\", \"completion\": \"xy\"}\n");
  slm::DatasetSummary summary;
  const auto examples = slm::read_jsonl_dataset(file, byte_tokens, 16, 2, &summary);
  ASSERT_EQ(examples.size(), 2u);
  EXPECT_EQ(examples[0].tokens, (std::vector<int32_t>{1, 'a', 'b', 2}));
  EXPECT_EQ(examples[0].labels, examples[0].tokens);
  EXPECT_EQ(examples[1].tokens, (std::vector<int32_t>{1, 'Q', 'x', 'y', 2}));
  EXPECT_EQ(examples[1].labels, (std::vector<int32_t>{-100, -100, 'x', 'y', 2}));
  EXPECT_EQ(summary.examples, 2);
  EXPECT_EQ(summary.tokens, 9);
  EXPECT_EQ(summary.loss_tokens, 3 + 3);
  EXPECT_EQ(summary.truncated, 0);
}

TEST(Dataset, TruncatesAndCounts) {
  const fs::path file = write_file("long.jsonl", "{\"text\": \"abcdefgh\"}\n{\"text\": \"a\"}\n");
  slm::DatasetSummary summary;
  const auto examples = slm::read_jsonl_dataset(file, byte_tokens, 4, std::nullopt, &summary);
  EXPECT_EQ(examples[0].tokens, (std::vector<int32_t>{1, 'a', 'b', 'c'}));
  EXPECT_EQ(summary.truncated, 1);
}

TEST(Dataset, BadLinesNameFileAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"{\"text\": \"ok\"}\nnot json\n", ":2: not a JSON object"},
      {"{\"text\": 5}\n", ":1: field \"text\" must be a string"},
      {"{\"prompt\": \"only\"}\n", ":1: expected {\"text\""},
      {"[1, 2]\n", ":1: expected a JSON object"},
      {"\n\n", "no training examples"},
  };
  for (const auto& [text, message] : cases) {
    const fs::path file = write_file("bad.jsonl", text);
    try {
      slm::read_jsonl_dataset(file, byte_tokens, 16, std::nullopt);
      ADD_FAILURE() << "accepted " << text;
    } catch (const slm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.jsonl"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(slm::read_jsonl_dataset("/nonexistent/x.jsonl", byte_tokens, 16, std::nullopt), slm::Error);
}

TEST(Dataset, BatchesPadOnTheRightWithIgnoredLabels) {
  std::vector<slm::TrainExample> examples(2);
  examples[0].tokens = examples[0].labels = {5, 6, 7};
  examples[1].tokens = {8, 9};
  examples[1].labels = {-100, 9};
  const slm::TrainBatch b = slm::make_batch(examples, {1, 0}, 0);
  EXPECT_EQ(b.batch, 2);
  EXPECT_EQ(b.seq, 3);
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{8, 9, 0, 5, 6, 7}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{-100, 9, -100, 5, 6, 7}));
  EXPECT_EQ(b.counted_tokens(), 1 + 2);
}

TEST(Dataset, PackingFillsSequencesWithoutSplittingExamples) {
  std::vector<slm::TrainExample> examples;
  for (int n : {3, 2, 4, 1, 5}) {
    slm::TrainExample e;
    for (int i = 0; i < n; ++i) e.tokens.push_back(n * 10 + i);
    e.labels = e.tokens;
    e.labels[0] = -100;
    examples.push_back(e);
  }
  const auto packed = slm::pack_examples(examples, 6);
  ASSERT_EQ(packed.size(), 3u);
  EXPECT_EQ(packed[0].tokens, (std::vector<int32_t>{30, 31, 32, 20, 21}));
  EXPECT_EQ(packed[0].labels, (std::vector<int32_t>{-100, 31, 32, -100, 21}));
  EXPECT_EQ(packed[1].tokens, (std::vector<int32_t>{40, 41, 42, 43, 10}));
  EXPECT_EQ(packed[2].tokens, (std::vector<int32_t>{50, 51, 52, 53, 54}));
}

TEST(Dataset, EpochOrderIsASeededPermutation) {
  const auto a = slm::epoch_order(10, 3, 0), b = slm::epoch_order(10, 3, 0), c = slm::epoch_order(10, 3, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[i], i);
}

}  // namespace
