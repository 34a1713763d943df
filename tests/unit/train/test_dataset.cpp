// JSON-lines training data and batching, with a stand-in tokenizer (one id
// per byte, BOS = 1 with special tokens) so the rules are visible.
#include <slm/chat_template.h>
#include <slm/error.h>
#include <slm/train.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>

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

// A file of many batches of lines, read on every thread of the pool: the
// examples in file order, the summary of all of them, and of two bad lines
// the first named (the one a reader going line by line would stop at).
TEST(Dataset, ManyLinesOnThreadsGiveTheOrderOfTheFile) {
  const int lines = 10000;
  std::string text;
  std::vector<std::vector<int32_t>> want;  // each line's tokens (BOS, bytes), cut to 16
  int64_t tokens = 0, truncated = 0;
  for (int i = 0; i < lines; ++i) {
    if (i % 11 == 5) {
      text += "\n";
      continue;
    }
    const bool pair = i % 7 == 3;
    std::string words = "l";
    words += std::to_string(i);
    words.append(pair ? 0 : static_cast<size_t>(i % 13), 'x');
    text += pair ? "{\"prompt\": \"" : "{\"text\": \"";
    text += words;
    text += pair ? "\", \"completion\": \"!\"}\n" : "\"}\n";
    if (pair) words += '!';
    std::vector<int32_t> ids = byte_tokens(words, true);
    if (ids.size() > 16) {
      ids.resize(16);
      ++truncated;
    }
    tokens += static_cast<int64_t>(ids.size());
    want.push_back(std::move(ids));
  }
  slm::DatasetSummary summary;
  const auto examples = slm::read_jsonl_dataset(write_file("many.jsonl", text), byte_tokens, 16, std::nullopt, &summary);
  ASSERT_EQ(examples.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) ASSERT_EQ(examples[k].tokens, want[k]) << "example " << k;
  EXPECT_EQ(summary.examples, static_cast<int64_t>(want.size()));
  EXPECT_EQ(summary.tokens, tokens);
  EXPECT_EQ(summary.truncated, truncated);
  EXPECT_GT(truncated, 0);

  std::string bad = text;
  for (const int line : {6001, 4500}) {  // the later one first, so that the order is what is tested
    size_t at = 0;
    for (int k = 1; k < line; ++k) at = bad.find('\n', at) + 1;
    bad.insert(at, "not json\n");
  }
  try {
    slm::read_jsonl_dataset(write_file("many_bad.jsonl", bad), byte_tokens, 16, std::nullopt);
    ADD_FAILURE() << "accepted two bad lines";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("many_bad.jsonl:4500: not JSON"), std::string::npos) << e.what();
  }
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
      {"{\"text\": \"ok\"}\nnot json\n", ":2: not JSON ("},
      // A number past a double's range: nlohmann's out_of_range, not a parse_error.
      {"{\"text\": \"ok\", \"weight\": 1e999}\n", ":1: not JSON ([json.exception.out_of_range.406] number overflow"},
      {"{\"text\": \"ok\"}\n{\"text\": \"a\" \"b\"}\n", ":2: not JSON ([json.exception.parse_error.101] parse error at line 1, column 16"},
      {"{\"text\": \"a\", \"prompt\": \"Q\", \"completion\": \"A\"}\n", ":1: holds both \"text\" and \"prompt\"/\"completion\""},
      {"{\"messages\": [], \"text\": \"a\"}\n", ":1: holds both \"text\" and \"messages\""},
      {"{\"prompt\": \"only\"}\n", ":1: expected {\"text\""},
      {"{\"text\": 5}\n", ":1: field \"text\" must be a string"},
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

// Conversations: a ChatML template (Qwen's layout) and a stand-in tokenizer
// that reads "<|im_end|>" as one id, so the assistant pieces are visible.
constexpr int32_t kImEnd = 300;
const std::string kChatMl =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

std::vector<int32_t> chatml_tokens(std::string_view text, bool special) {
  std::vector<int32_t> ids;
  if (special) ids.push_back(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.substr(i).starts_with("<|im_end|>")) {
      ids.push_back(kImEnd);
      i += std::string_view("<|im_end|>").size() - 1;
    } else {
      ids.push_back(static_cast<unsigned char>(text[i]));
    }
  }
  return ids;
}

slm::RenderChatFn renderer(const std::string& source) {
  auto chat = std::make_shared<slm::ChatTemplate>(source, "template.jinja");
  return [chat](const slm::ChatJson& messages, bool add_generation_prompt) {
    return chat->render({{"messages", messages}, {"add_generation_prompt", add_generation_prompt}});
  };
}

// ids with labels: -100 on `context`, the ids themselves on `answer`.
void expect_piece(const slm::TrainExample& e, size_t& at, std::string_view text, bool counted) {
  const std::vector<int32_t> ids = chatml_tokens(text, false);
  ASSERT_LE(at + ids.size(), e.tokens.size()) << text;
  for (size_t k = 0; k < ids.size(); ++k, ++at) {
    EXPECT_EQ(e.tokens[at], ids[k]) << "position " << at << " of piece " << text;
    EXPECT_EQ(e.labels[at], counted ? ids[k] : -100) << "position " << at << " of piece " << text;
  }
}

// A template that knows only some roles drops the others without a word;
// the reader counts the messages its render does not hold, and names the first.
TEST(Dataset, MessagesTheTemplateDropsAreCounted) {
  const fs::path file = write_file(
      "roles.jsonl",
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, )"
      R"({"role": "assistant", "content": "Hello."}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes."}]})"
      "\n");
  const std::string user_and_assistant =
      "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'U: ' + m['content'] + '\n' }}"
      "{% elif m['role'] == 'assistant' %}{{ 'A: ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
      "{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}";
  slm::DatasetSummary summary;
  slm::read_jsonl_dataset(file, chatml_tokens, 64, std::nullopt, &summary, renderer(user_and_assistant));
  EXPECT_EQ(summary.unrendered_messages, 1);
  EXPECT_NE(summary.first_unrendered.find("roles.jsonl:1: messages[0], role \"system\""), std::string::npos)
      << summary.first_unrendered;
  slm::DatasetSummary chatml;
  slm::read_jsonl_dataset(file, chatml_tokens, 64, std::nullopt, &chatml, renderer(kChatMl));
  EXPECT_EQ(chatml.unrendered_messages, 0) << "ChatML renders every role";
}

TEST(Dataset, MessagesCountLossOnAssistantTurnsOnly) {
  const fs::path file = write_file(
      "chat.jsonl",
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, )"
      R"({"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})"
      "\n");
  slm::DatasetSummary summary;
  const auto examples = slm::read_jsonl_dataset(file, chatml_tokens, 256, kImEnd, &summary, renderer(kChatMl));
  ASSERT_EQ(examples.size(), 1u);
  const slm::TrainExample& e = examples[0];
  size_t at = 0;
  expect_piece(e, at, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false);
  expect_piece(e, at, "Hello<|im_end|>\n", true);
  expect_piece(e, at, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", false);
  expect_piece(e, at, "4<|im_end|>\n", true);
  EXPECT_EQ(at, e.tokens.size()) << "the render ends with <|im_end|>\\n: no second EOS";
  EXPECT_EQ(summary.loss_tokens, 7 + 3);
}

TEST(Dataset, MessagesGetEosWhenTheRenderLacksIt) {
  const fs::path file = write_file(
      "chat_eos.jsonl", R"({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})" "\n");
  const auto examples = slm::read_jsonl_dataset(file, chatml_tokens, 256, 2, nullptr,
                                                renderer("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                                                         "{% if add_generation_prompt %}<assistant>{% endif %}"));
  ASSERT_EQ(examples.size(), 1u);
  size_t at = 0;
  expect_piece(examples[0], at, "<user>Q<assistant>", false);
  expect_piece(examples[0], at, "A", true);
  EXPECT_EQ(examples[0].tokens.back(), 2);
  EXPECT_EQ(examples[0].labels.back(), 2);
  EXPECT_EQ(examples[0].tokens.size(), at + 1);
}

TEST(Dataset, BadConversationsNameFileAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"messages": "hi"})", ":1: \"messages\" must be a non-empty array"},
      {R"({"messages": [{"content": "x"}]})", ":1: messages[0]: \"role\" must be a string"},
      {R"({"messages": [{"role": "user", "content": 3}]})", ":1: messages[0]: \"content\" must be a string"},
      {R"({"messages": [{"role": "user", "content": "only a question"}]})", ":1: the conversation has no \"assistant\" message"},
  };
  for (const auto& [text, message] : cases) {
    const fs::path file = write_file("bad_chat.jsonl", std::string(text) + "\n");
    try {
      slm::read_jsonl_dataset(file, chatml_tokens, 64, std::nullopt, nullptr, renderer(kChatMl));
      ADD_FAILURE() << "accepted " << text;
    } catch (const slm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("bad_chat.jsonl") + message), std::string::npos) << e.what();
    }
  }
}

TEST(Dataset, ConversationsNeedAPrefixStableTemplate) {
  const fs::path file = write_file(
      "chat_unstable.jsonl",
      "\n" R"({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "R"}]})" "\n");
  auto error = [&](const slm::RenderChatFn& render) {
    try {
      slm::read_jsonl_dataset(file, chatml_tokens, 64, std::nullopt, nullptr, render);
    } catch (const slm::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  // The count of messages up front changes with every prefix of the conversation.
  EXPECT_NE(error(renderer("{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}"))
                .find("chat_unstable.jsonl:2: the chat template is not prefix-stable at messages[1]"),
            std::string::npos);
  const std::string raised = error(renderer("{{ raise_exception('no ' ~ messages[0].role) }}"));
  EXPECT_NE(raised.find("chat_unstable.jsonl:2: template.jinja:1:4: no user"), std::string::npos) << raised;
  EXPECT_NE(error({}).find("chat_unstable.jsonl:2: {\"messages\": ...} examples need a chat template"), std::string::npos);
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
