#include "tokenizer/pattern.h"

#include "tokenizer/split_scanner.h"
#include "tokenizer/unicode.h"

#include <slm/error.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <optional>

namespace slm::tok {

struct Pattern::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;  // compiled to machine code: matched through pcre2_jit_match
  std::optional<SplitScanner> scanner;  // what matches instead of PCRE2, when the expression is a known one
  ~Regex() { pcre2_code_free(code); }
};

Pattern Pattern::regex(std::string_view expression, const std::string& where, Matcher matcher) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expression.data()), expression.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail(where, ": invalid regular expression at offset ", offset, ": ", reinterpret_cast<const char*>(message));
  }
  auto regex = std::make_shared<Regex>();
  regex->code = code;
  // The interpreter stays where JIT is unavailable.
  regex->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  if (matcher == Matcher::Fastest) regex->scanner = SplitScanner::of(expression);
  Pattern p;
  p.regex_ = std::move(regex);
  return p;
}

Pattern Pattern::literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

Pattern Pattern::from_json(const nlohmann::json& pattern, const std::string& where) {
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
    return literal(pattern["String"].get<std::string>());
  }
  if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
    return regex(pattern["Regex"].get<std::string>(), where);
  }
  fail(where, ": expected {\"String\": ...} or {\"Regex\": ...}");
}

void Pattern::find_all(std::string_view text, std::vector<Span>& out) const {
  for_each_match(text, [&](size_t begin, size_t end) {
    out.emplace_back(begin, end);
    return true;
  });
}

void Pattern::for_each_match(std::string_view text, FunctionRef<bool(size_t, size_t)> match, size_t from) const {
  if (!regex_) {
    if (literal_.empty()) return;
    for (size_t at = text.find(literal_, from); at != std::string_view::npos; at = text.find(literal_, at + literal_.size())) {
      if (!match(at, at + literal_.size())) return;
    }
    return;
  }
  if (regex_->scanner) {
    // No empty matches, and a character no alternative takes is stepped over.
    for (size_t start = from; start < text.size();) {
      const size_t end = regex_->scanner->match_at(text, start);
      if (end > start) {
        if (!match(start, end)) return;
        start = end;
      } else {
        start += utf8_length(static_cast<uint8_t>(text[start]));
      }
    }
    return;
  }
  // One match-data block per thread, sized for any of our patterns' groups.
  thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create(16, nullptr), pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = from;
  while (start <= text.size()) {
    // pcre2_jit_match skips pcre2_match's checks of its arguments, once per
    // piece: 5.6% of a warm Llama 3 encode (`perf`). The text is valid
    // UTF-8 (checked where it enters), as JIT matching takes for granted.
    const int rc = regex_->jit ? pcre2_jit_match(regex_->code, subject, text.size(), start, 0, data.get(), nullptr)
                               : pcre2_match(regex_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data.get(),
                                             nullptr);
    if (rc < 0) break;  // no match (or a resource limit: treat the rest as unmatched)
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      if (!match(begin, end)) return;
      start = end;
    } else {
      // An empty match: step over one whole character.
      if (begin >= text.size()) break;
      start = begin + 1;
      while (start < text.size() && (static_cast<uint8_t>(text[start]) & 0xc0) == 0x80) ++start;
    }
  }
}

std::string Pattern::replace_all(std::string_view text, std::string_view replacement) const {
  std::string out;
  out.reserve(text.size());
  size_t last = 0;
  for_each_match(text, [&](size_t begin, size_t end) {
    out.append(text.substr(last, begin - last));
    out.append(replacement);
    last = end;
    return true;
  });
  out.append(text.substr(last));
  return out;
}

}  // namespace slm::tok
