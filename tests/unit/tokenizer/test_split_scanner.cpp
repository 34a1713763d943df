// The split scanner against PCRE2, its reference: the same matches for the
// GPT-2, Llama 3 and Qwen 2 expressions on every code point in the contexts
// that tell the alternatives apart, on random strings of the
// characters where they disagree most easily, and on the project's docs.
#include "tokenizer/pattern.h"
#include "tokenizer/split_scanner.h"
#include "tokenizer/unicode.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace slm::tok {
namespace {

const std::string_view kExpressions[] = {kGpt2Split, kLlama3Split, kQwen2Split};

// The first place where the two engines' matches part, or "" when they agree.
std::string first_difference(size_t expression, std::string_view text) {
  static const std::vector<std::pair<Pattern, Pattern>> engines = [] {
    std::vector<std::pair<Pattern, Pattern>> both;
    for (const std::string_view e : kExpressions) {
      both.emplace_back(Pattern::regex(e, "test"), Pattern::regex(e, "test", Pattern::Matcher::Pcre2));
    }
    return both;
  }();
  std::vector<Span> got, want;
  engines[expression].first.find_all(text, got);
  engines[expression].second.find_all(text, want);
  for (size_t i = 0; i < std::max(got.size(), want.size()); ++i) {
    if (i < got.size() && i < want.size() && got[i] == want[i]) continue;
    std::ostringstream out;
    const size_t at = i < want.size() ? want[i].first : got[i].first;
    out << "match " << i << " near byte " << at << " (\"" << text.substr(at >= 8 ? at - 8 : 0, 24) << "\"): scanner ";
    if (i < got.size()) {
      out << "[" << got[i].first << ", " << got[i].second << ")";
    } else {
      out << "none";
    }
    out << ", PCRE2 ";
    if (i < want.size()) {
      out << "[" << want[i].first << ", " << want[i].second << ")";
    } else {
      out << "none";
    }
    return out.str();
  }
  return "";
}

TEST(SplitScanner, KnowsTheByteLevelExpressionsAndNoOther) {
  for (const std::string_view expression : kExpressions) {
    EXPECT_TRUE(SplitScanner::of(expression).has_value()) << expression;
  }
  EXPECT_FALSE(SplitScanner::of(R"(\p{L}+)").has_value());
  EXPECT_FALSE(SplitScanner::of(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+)").has_value());
}

TEST(SplitScanner, MatchesPcre2OnEveryCodePoint) {
  // Each code point c as a letter, number, space or other character would
  // show: after an apostrophe (caseless contractions: the long s folds to
  // s), after a space, doubled, before and after digits, punctuation, line
  // breaks and letters, and at the end of the text.
  // In blocks of code points, so that the text stays small.
  constexpr char32_t kBlock = 0x1000;
  std::string text, s;
  for (char32_t first = 1; first < 0x110000; first += kBlock) {
    text.clear();
    for (char32_t c = first; c < std::min<char32_t>(first + kBlock, 0x110000); ++c) {
      if (c >= 0xD800 && c < 0xE000) continue;
      s.clear();
      append_utf8(s, c);
      // A letter before the apostrophes, so that a match starts there, and
      // one after the contractions: there the letters alternative would take
      // more than the contraction does. Past U+323AF (the last assigned
      // letters and numbers: the rest is unassigned, tags, variation
      // selectors and private use) the contractions alone, where a code
      // point's own identity counts (caseless matching); elsewhere only
      // its class and length do, and the planes below hold every kind.
      const bool every_context = c < 0x32400;
      for (const char* before : {"a'", "a", "a'r", "a", "a'l", "a", " ", "", "1", ".", "\n", " \t"}) {
        if (!every_context && *before == ' ') break;
        text += before;
        text += s;
      }
      text += "\n ";
    }
    text += s;
    for (size_t e = 0; e < std::size(kExpressions); ++e) {
      ASSERT_EQ(first_difference(e, text), "")
          << kExpressions[e] << ", code points from U+" << std::hex << static_cast<uint32_t>(first);
    }
  }
}

TEST(SplitScanner, MatchesPcre2OnRandomStrings) {
  const std::vector<std::string> alphabet = {"a", "Z", "s", "S", "t", "r", "e", "E", "v", "l", "L", "m", "d", "'", " ",
                                             "  ", "\t", "\n", "\r", "\r\n", "1", "23", "4567", ".", ",", "!?", "-",
                                             "\u017F", "\u00E9", "\u0301", "\u00A0", "\u2028", "\u0085", "\u3000",
                                             "\u4E2D", "\u0661", "\u2167", "\u00BD", "\U0001F600", "\u200B", "_"};
  std::mt19937 random(7);
  for (int round = 0; round < 100000; ++round) {
    std::string text;
    const int length = static_cast<int>(random() % 24);
    for (int i = 0; i < length; ++i) text += alphabet[random() % alphabet.size()];
    for (size_t e = 0; e < std::size(kExpressions); ++e) {
      ASSERT_EQ(first_difference(e, text), "") << kExpressions[e] << " on \"" << text << "\"";
    }
  }
}

TEST(SplitScanner, MatchesPcre2OnTheDocs) {
  std::string text;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(SLM_SOURCE_DIR) / "docs")) {
    std::ifstream file(entry.path(), std::ios::binary);
    text.append(std::istreambuf_iterator<char>(file), {});
  }
  ASSERT_GT(text.size(), 100000u);
  ASSERT_TRUE(is_valid_utf8(text));
  for (size_t e = 0; e < std::size(kExpressions); ++e) EXPECT_EQ(first_difference(e, text), "") << kExpressions[e];
}

TEST(SplitScanner, MatchesFromAnOffsetAsAScanFromTheStart) {
  const std::string text = "Hello, world's 12345 \r\n\n  end";
  const Pattern pattern = Pattern::regex(kLlama3Split, "test");
  std::vector<Span> whole;
  pattern.find_all(text, whole);
  for (const Span& piece : whole) {
    std::vector<Span> rest;
    pattern.for_each_match(
        text,
        [&](size_t begin, size_t end) {
          rest.emplace_back(begin, end);
          return true;
        },
        piece.first);
    EXPECT_EQ(rest, std::vector<Span>(whole.begin() + (&piece - whole.data()), whole.end()));
  }
}

}  // namespace
}  // namespace slm::tok
