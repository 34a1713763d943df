// The patterns of tokenizer.json ({"String": ...} or {"Regex": ...}):
// literal strings, or regular expressions with Unicode classes and
// look-around, run by PCRE2 (UTF + UCP, JIT-compiled), or, for the split
// expressions of byte-level tokenizers, by a SplitScanner that finds the
// same matches.
#pragma once

#include "tokenizer/function_ref.h"

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slm::tok {

using Span = std::pair<size_t, size_t>;  // [begin, end) byte offsets

class Pattern {
 public:
  // `where` names the field in error messages.
  static Pattern from_json(const nlohmann::json& pattern, const std::string& where);
  // Matcher::Pcre2 keeps PCRE2 even for an expression a SplitScanner knows:
  // the reference the scanner is tested against.
  enum class Matcher { Fastest, Pcre2 };
  static Pattern regex(std::string_view expression, const std::string& where, Matcher matcher = Matcher::Fastest);
  static Pattern literal(std::string text);

  // Non-overlapping, non-empty matches, left to right from byte `from`, each
  // passed to `match` as it is found (begin, end); `match` returns false to stop.
  // The text before `from` is still seen by look-behind: matching from a place
  // where a scan from the start would look next finds what that scan finds.
  void for_each_match(std::string_view text, FunctionRef<bool(size_t, size_t)> match, size_t from = 0) const;
  // The same, collected.
  void find_all(std::string_view text, std::vector<Span>& out) const;
  std::string replace_all(std::string_view text, std::string_view replacement) const;
  // Whether a match may hold a newline: false only for a string without one
  // (a regular expression is not inspected).
  bool may_match_newline() const { return regex_ || literal_.find('\n') != std::string::npos; }

 private:
  struct Regex;
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
};

}  // namespace slm::tok
