// Normalizing a long text in parts (Tokenizer::encode on several threads):
// a normalizer that says it may be cut after newlines gives, for the parts,
// the whole text's normalization joined; the ones that may not say so.
#include "tokenizer/pipeline.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace {

using json = nlohmann::json;

// `text` normalized in parts cut after each of its newlines, joined.
std::string normalized_in_parts(const slm::tok::Normalizer& normalizer, const std::string& text) {
  std::vector<size_t> cuts{0};
  for (size_t at = text.find('\n'); at != std::string::npos && at + 1 < text.size(); at = text.find('\n', at + 1)) {
    cuts.push_back(at + 1);
  }
  cuts.push_back(text.size());
  std::string joined;
  for (size_t k = 0; k + 1 < cuts.size(); ++k) {
    joined += normalizer.normalize(text.substr(cuts[k], cuts[k + 1] - cuts[k]), k == 0, k + 2 == cuts.size());
  }
  return joined;
}

// Lines that start or end where each rule looks beyond a character: a
// combining accent after the newline (NFC would compose it with a letter
// before), final sigma, İ, leading and trailing spaces, tabs, CJK, ligatures.
const std::string kText =
    "  Σ café\n\xCC\x81" "e\xCC\x81 ΟΔΟΣ\nİstanbul ﬁne  \n\n\t x ΣΑΣ\n日本語 ① \n e\xCC\x81\xCC\xA3 ";

TEST(Normalizers, PartsCutAfterNewlinesJoinIntoTheWhole) {
  const json cases[] = {
      {{"type", "NFC"}},
      {{"type", "NFD"}},
      {{"type", "NFKC"}},
      {{"type", "NFKD"}},
      {{"type", "Lowercase"}},
      {{"type", "StripAccents"}},
      {{"type", "Prepend"}, {"prepend", "\u2581"}},
      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}},
      // Llama 2's, and a BERT-like chain.
      {{"type", "Sequence"},
       {"normalizers",
        {{{"type", "Prepend"}, {"prepend", "\u2581"}},
         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}},
      {{"type", "Sequence"}, {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}, {{"type", "Lowercase"}}}}},
  };
  for (const json& config : cases) {
    const auto normalizer = slm::tok::make_normalizer(config, "test");
    EXPECT_TRUE(normalizer->normalizes_in_parts()) << config.dump();
    const std::string whole = normalizer->normalize(kText);
    EXPECT_NE(whole, kText) << config.dump() << ": the text should exercise it";
    EXPECT_EQ(normalized_in_parts(*normalizer, kText), whole) << config.dump();
  }
}

TEST(Normalizers, ThoseThatCannotBeCutSaySo) {
  const json cases[] = {
      {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
      {{"type", "Replace"}, {"pattern", {{"String", "\n "}}}, {"content", "_"}},
      {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", " "}},
      {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Strip"}}}}},
  };
  for (const json& config : cases) {
    EXPECT_FALSE(slm::tok::make_normalizer(config, "test")->normalizes_in_parts()) << config.dump();
  }
  // Why Strip cannot: a first part of whitespace alone stops the strip short.
  const auto strip = slm::tok::make_normalizer(cases[0], "test");
  EXPECT_NE(normalized_in_parts(*strip, " \n x"), strip->normalize(" \n x"));
}

}  // namespace
