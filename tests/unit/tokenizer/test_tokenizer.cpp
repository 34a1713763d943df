// Unit tests for the tokenizer: the behaviour of a small hand-made
// tokenizer.json (tests/unit/tokenizer/data; the ids it gives for the rule
// cases, "abc", "ab", "é", "a b", ..., are held to @huggingface/tokenizers by
// tokenizer_parity.HandMadeTokenizers), the error messages a malformed file
// must give, and the streaming decoder.
#include <slm/error.h>
#include <slm/tokenizer.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

fs::path write_file(const std::string& name, const std::string& text) {
  fs::path path = fs::temp_directory_path() / ("slm_tokenizer_test_" + name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// A SentencePiece-style BPE over "a", "b", "ab", "abc", "▁ab" with byte
// fallback: characters outside the vocabulary become <0xNN> byte tokens.
json sentencepiece_style() {
  std::ifstream in(std::string(SLM_SOURCE_DIR) + "/tests/unit/tokenizer/data/byte_fallback_bpe/tokenizer.json");
  return json::parse(in);
}

slm::Tokenizer load(const json& file, const std::string& name) {
  return slm::Tokenizer::from_file(write_file(name + ".json", file.dump()));
}

std::string load_error(const json& file, const std::string& name) {
  try {
    load(file, name);
  } catch (const slm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Tokenizer, SpecialTokensAreAddedByThePostProcessorOnly) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp");
  const std::vector<int32_t> plain = tokenizer.encode("ab", false), with = tokenizer.encode("ab", true);
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with[0], tokenizer.token_to_id("<s>"));
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), with.begin() + 1));
}

TEST(Tokenizer, AddedTokensAreMatchedBeforeTheModel) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp_added");
  // "<s>" inside the text is the special token, not the characters < s >.
  std::vector<int32_t> ids = tokenizer.encode("ab<s>ab", false);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], ids[2]);
  EXPECT_EQ(ids[1], 1);
  EXPECT_TRUE(tokenizer.is_special(1));
  EXPECT_FALSE(tokenizer.is_special(ids[0]));
}

TEST(Tokenizer, DecodeFusesBytesAndSkipsSpecialTokens) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp_decode");
  std::vector<int32_t> ids = tokenizer.encode("ab \xC3\xA9", true);
  EXPECT_EQ(tokenizer.decode(ids, true), "ab \xC3\xA9");
  EXPECT_EQ(tokenizer.decode(ids, false), "<s> ab \xC3\xA9");
  EXPECT_EQ(tokenizer.token_to_id("\u2581ab"), 9);
  EXPECT_EQ(tokenizer.id_to_token(8), "abc");
  EXPECT_FALSE(tokenizer.token_to_id("zzz").has_value());
}

TEST(Tokenizer, InvalidUtf8BecomesReplacementCharacter) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp_utf8");
  // A lone continuation byte encodes as U+FFFD (whose ids the parity corpus holds).
  EXPECT_EQ(tokenizer.encode("\x80", false), tokenizer.encode("\xEF\xBF\xBD", false));
}

// Words of up to 64 bytes are merged in flat arrays, longer ones through a
// heap (the reference). "z" merges with nothing, so a word followed by 70
// "z"s (the heap's) must give the word's ids (the arrays') and 70 "z"s.
TEST(Tokenizer, ShortAndLongWordMergesAgree) {
  const std::vector<std::string> merges = {"a b", "b c", "ab c", "a a", "c a", "aa b", "bc a", "ab ab", "ca b", "b b",
                                           "abc abc", "bb a", "c c", "cc cc"};
  json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"z", 3}};
  for (const std::string& merge : merges) {
    const std::string merged = merge.substr(0, merge.find(' ')) + merge.substr(merge.find(' ') + 1);
    if (!vocab.contains(merged)) vocab[merged] = vocab.size();
  }
  const json file = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  const slm::Tokenizer tokenizer = load(file, "merge_paths");
  const int32_t z = *tokenizer.token_to_id("z");
  std::mt19937 random(16);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string word(1 + random() % 64, 'a');
    for (char& c : word) c = "abc"[random() % 3];
    std::vector<int32_t> expected = tokenizer.encode(word, false);
    expected.insert(expected.end(), 70, z);
    ASSERT_EQ(tokenizer.encode(word + std::string(70, 'z'), false), expected) << word;
  }
}

// A long text encoded in parts on several threads gives the ids of one
// thread, and is cut: Llama 3 after newlines, Qwen 3 the same after its NFC,
// Llama 2 (no pre-tokenizer) and Gemma 3 (a split on spaces, which its
// normalizer has replaced) before a "▁", over lines, runs of newlines and
// spaces, digits, punctuation, accents, CJK and special tokens.
TEST(Tokenizer, ThreadsGiveTheIdsOfOneThread) {
  const fs::path packages = fs::path(SLM_SOURCE_DIR) / "tests/reference/node_modules/@lenml";
  if (!fs::exists(packages / "tokenizer-llama3/models/tokenizer.json")) GTEST_SKIP() << "run scripts/setup.sh";
  const char* words[] = {"the", "The", "vim", " ", "  ", "\n", "\n\n", " \n", "\r\n", "\t", "12345", "3.14", "!", "?!",
                         "don't", "I'LL", "café", "naïve", "日本語", "😀", "x=y;", "  \n  ", "—", "e\u0301", "\u2581"};
  std::mt19937 random(7);
  std::string text;
  while (text.size() < (1200u << 10)) {
    text += words[random() % std::size(words)];
    if (random() % 3 == 0) text += ' ';
  }
  // Special tokens (of Llama 3 and of Gemma 3) cut the text into sections,
  // each encoded apart: two long ones, each long enough for 8 parts.
  text.insert(1000, "<|begin_of_text|><start_of_turn>");
  text.insert(text.size() / 2, "<start_of_turn><|begin_of_text|>");
  for (const char* name : {"llama3", "llama2", "qwen3", "gemma3"}) {
    const slm::Tokenizer tokenizer = slm::Tokenizer::from_dir(packages / ("tokenizer-" + std::string(name)) / "models");
    size_t parts = 0;
    const std::vector<int32_t> one = tokenizer.encode(text, true, 1, &parts);
    EXPECT_EQ(parts, 1u) << name;
    for (int threads : {2, 3, 8}) {
      EXPECT_EQ(tokenizer.encode(text, true, threads, &parts), one) << name << ", " << threads << " threads";
      EXPECT_EQ(parts, static_cast<size_t>(threads)) << name << ", " << threads << " threads";
    }
  }
}

// Added tokens are found in parts of a long text too, as in the whole: a
// token with a newline inside runs over every cut (after newlines) here, so
// the text goes back to one scan; a token that swallows the whitespace
// before it (lstrip) swallows the newline that ends the part before.
TEST(Tokenizer, AddedTokensInPartsAsInTheWhole) {
  json file = sentencepiece_style();
  auto added = [](int id, const char* content, bool lstrip) {
    return json{{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", lstrip},
                {"rstrip", lstrip}, {"normalized", false}, {"special", false}};
  };
  file["added_tokens"].push_back(added(1000, "c\nc", false));
  file["added_tokens"].push_back(added(1001, "<t>", true));
  const slm::Tokenizer tokenizer = load(file, "added_in_parts");
  for (const auto& [line, token] : {std::pair("ab c\nc abc ", 1000), std::pair("ab c\n<t> abc ", 1001)}) {
    std::string text;
    while (text.size() < (400u << 10)) text += line;
    const std::vector<int32_t> one = tokenizer.encode(text, false);
    ASSERT_EQ(std::count(one.begin(), one.end(), token), static_cast<std::ptrdiff_t>(text.size() / strlen(line)));
    for (int threads : {2, 3}) EXPECT_EQ(tokenizer.encode(text, false, threads), one) << token << ", " << threads << " threads";
  }
}

TEST(Tokenizer, StreamDecoderNeverEmitsHalfACharacter) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp_stream");
  std::vector<int32_t> ids = tokenizer.encode("ab \xC3\xA9 abc", false);
  slm::StreamDecoder stream(tokenizer, true);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = stream.push(id);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "half a character was emitted";
    streamed += piece;
  }
  streamed += stream.finish();
  EXPECT_EQ(streamed, tokenizer.decode(ids, true));
}

TEST(TokenizerErrors, MergeNamingUnknownTokenSaysWhichMerge) {
  json file = sentencepiece_style();
  file["model"]["merges"].push_back("a zz");
  std::string message = load_error(file, "bad_merge");
  EXPECT_NE(message.find("merges[3]"), std::string::npos) << message;
  EXPECT_NE(message.find("\"zz\""), std::string::npos) << message;
}

// Merges are looked up in batches: the first bad merge in the file is still
// the one named, even when a later one in the same batch is malformed.
TEST(TokenizerErrors, FirstBadMergeIsNamedBeforeALaterMalformedOne) {
  json file = sentencepiece_style();
  file["model"]["merges"].push_back("a zz");
  file["model"]["merges"].push_back("no_space_here");
  std::string message = load_error(file, "bad_merges");
  EXPECT_NE(message.find("merges[3]"), std::string::npos) << message;
  EXPECT_NE(message.find("\"zz\""), std::string::npos) << message;
}

TEST(TokenizerErrors, DuplicateAndOutOfRangeIds) {
  json duplicate = sentencepiece_style();
  duplicate["model"]["vocab"]["dup"] = 4;
  std::string message = load_error(duplicate, "dup_id");
  EXPECT_NE(message.find("id 4 is given to both"), std::string::npos) << message;

  json out_of_range = sentencepiece_style();
  out_of_range["added_tokens"][0]["id"] = -1;
  message = load_error(out_of_range, "bad_id");
  EXPECT_NE(message.find("added_tokens[0]"), std::string::npos) << message;
  EXPECT_NE(message.find("out of range"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnknownComponentAndUnsupportedModelAreNamed) {
  json unknown = sentencepiece_style();
  unknown["decoder"]["decoders"][1]["type"] = "Foo";
  std::string message = load_error(unknown, "unknown_decoder");
  EXPECT_NE(message.find("decoders[1]"), std::string::npos) << message;
  EXPECT_NE(message.find("\"Foo\""), std::string::npos) << message;

  json unigram = sentencepiece_style();
  unigram["model"]["type"] = "Unigram";
  message = load_error(unigram, "unigram");
  EXPECT_NE(message.find("not supported yet"), std::string::npos) << message;

  std::string bad_json = "{\"model\": ";
  try {
    slm::Tokenizer::from_file(write_file("bad.json", bad_json));
    FAIL() << "truncated JSON was accepted";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

}  // namespace
