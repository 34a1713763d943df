// The split expressions of byte-level BPE tokenizers (GPT-2's, Llama 3's,
// Qwen 2's: nearly every byte-level tokenizer.json carries one of them)
// matched by a loop over character classes instead of PCRE2: the same
// matches, found in one pass with no call into a regex engine per piece.
// PCRE2 stays the reference (and the matcher of every other expression);
// the tests and a fuzz target hold the scanner to it.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace slm::tok {

// The split expressions the scanner knows, as tokenizer.json files spell them.
inline constexpr std::string_view kGpt2Split =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Split =  // Llama 3's with one digit a piece
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class SplitScanner {
 public:
  // The scanner of `expression` when it is one of the known ones, spelled
  // exactly as tokenizer.json files spell it; nullopt otherwise.
  static std::optional<SplitScanner> of(std::string_view expression);

  // The end of the match the expression finds starting at byte `at` of
  // `text` (valid UTF-8, `at` on a character boundary); `at` when there is none.
  size_t match_at(std::string_view text, size_t at) const;

 private:
  // What tells the known expressions apart.
  struct Grammar {
    bool caseless_contractions;  // (?i:'s|'t|...) rather than 's|'t|...
    bool any_before_letters;     // [^\r\n\p{L}\p{N}]?\p{L}+ rather than ` ?\p{L}+`
    int max_digits;              // \p{N}{1,max_digits}; 0: ` ?\p{N}+`
    bool newlines;               // ` ?[^\s\p{L}\p{N}]+[\r\n]*` and `\s*[\r\n]+`
  };
  explicit SplitScanner(Grammar grammar) : grammar_(grammar) {}
  Grammar grammar_;
};

}  // namespace slm::tok
