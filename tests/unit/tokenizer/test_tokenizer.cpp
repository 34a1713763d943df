// Unit tests for the tokenizer: small hand-made tokenizer.json files whose
// expected ids follow from the BPE rules by hand, the error messages a
// malformed file must give, and the streaming decoder.
#include <slm/error.h>
#include <slm/tokenizer.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
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

// A SentencePiece-style BPE over "a", "b", "ab", "abc" with byte fallback:
// characters outside the vocabulary become <0xNN> byte tokens.
json sentencepiece_style() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"\u2581", 3}, {"a", 4}, {"b", 5},
                {"c", 6}, {"ab", 7}, {"abc", 8}, {"\u2581ab", 9}};
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", byte);
    vocab[name] = 10 + byte;
  }
  return {
      {"added_tokens", json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false},
                                     {"lstrip", false}, {"rstrip", false}, {"single_word", false}}})},
      {"normalizer", {{"type", "Sequence"},
                      {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                                   {{"type", "Replace"}, {"pattern", {{"String", " "}}},
                                                    {"content", "\u2581"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                          {"pair", json::array()},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                             {{"type", "ByteFallback"}},
                                             {{"type", "Fuse"}},
                                             {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab},
                 {"merges", json::array({"a b", "ab c", "\u2581 ab"})}}},
  };
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

TEST(Tokenizer, MergesFollowRankOrderAndBytesFallBack) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp");
  // "▁abc": a+b (rank 0) first, then ab+c (rank 1) beats ▁+ab (rank 2).
  EXPECT_EQ(tokenizer.encode("abc", false), (std::vector<int32_t>{3, 8}));
  // "▁ab": ▁+ab is the only merge left after a+b.
  EXPECT_EQ(tokenizer.encode("ab", false), (std::vector<int32_t>{9}));
  // "é" is not in the vocabulary: its two UTF-8 bytes C3 A9 as byte tokens.
  EXPECT_EQ(tokenizer.encode("\xC3\xA9", false), (std::vector<int32_t>{3, 10 + 0xC3, 10 + 0xA9}));
  EXPECT_EQ(tokenizer.encode("ab", true), (std::vector<int32_t>{1, 9}));
}

TEST(Tokenizer, MergeJoiningMetaspaceToPreviousSymbolIsApplied) {
  // The encoder cuts SentencePiece-style text before a "▁" only where no
  // merge can join it to the character before; here "a" can be, "b" not.
  json file = sentencepiece_style();
  file["model"]["vocab"]["a\u2581"] = 266;
  file["model"]["merges"] = json::array({"a \u2581"});
  slm::Tokenizer tokenizer = load(file, "sp_cross");
  EXPECT_EQ(tokenizer.encode("a b", false), (std::vector<int32_t>{3, 266, 5}));
  EXPECT_EQ(tokenizer.encode("b a a", false), (std::vector<int32_t>{3, 5, 3, 266, 4}));
}

TEST(Tokenizer, AddedTokensAreMatchedBeforeTheModel) {
  slm::Tokenizer tokenizer = load(sentencepiece_style(), "sp_added");
  // "<s>" inside the text is the special token, not the characters < s >.
  std::vector<int32_t> ids = tokenizer.encode("ab<s>ab", false);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], 9);
  EXPECT_EQ(ids[1], 1);
  EXPECT_TRUE(tokenizer.is_special(1));
  EXPECT_FALSE(tokenizer.is_special(9));
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
  // A lone continuation byte is U+FFFD (EF BF BD), which byte-falls back.
  EXPECT_EQ(tokenizer.encode("\x80", false), (std::vector<int32_t>{3, 10 + 0xEF, 10 + 0xBF, 10 + 0xBD}));
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
