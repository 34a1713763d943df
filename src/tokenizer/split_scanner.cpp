#include "tokenizer/split_scanner.h"

#include "tokenizer/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace slm::tok {

namespace {

enum : uint8_t { kLetter = 1, kNumber = 2, kSpace = 4, kEnd = 8, kKnown = 0x80 };

// \p{L}, \p{N} and \s of every code point as PCRE2 (UTF + UCP) has them, so
// that the scanner and the regex engine agree to the character whatever
// Unicode version each was built with. ASCII is asked at start; any other
// code point the first time it is met, its answer kept.
class Classes {
 public:
  static const Classes& get() {
    static const Classes classes;
    return classes;
  }
  uint8_t of(char32_t cp) const {
    if (cp < 0x80) return ascii_[cp];
    if (cp >= 0x110000) return kKnown;  // past U+10FFFF (only from invalid UTF-8): other
    uint8_t c = table_[cp].load(std::memory_order_relaxed);
    if (!(c & kKnown)) {
      c = ask(cp);
      table_[cp].store(c, std::memory_order_relaxed);
    }
    return c;
  }

 private:
  Classes() : table_(new std::atomic<uint8_t>[0x110000]()) {
    const char* expressions[] = {R"(\p{L})", R"(\p{N})", R"(\s)"};
    for (size_t k = 0; k < codes_.size(); ++k) {
      int error = 0;
      PCRE2_SIZE offset = 0;
      codes_[k] = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expressions[k]), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &error, &offset, nullptr);
    }
    for (char32_t cp = 0; cp < 0x80; ++cp) ascii_[cp] = ask(cp);
  }
  ~Classes() {
    for (pcre2_code* code : codes_) pcre2_code_free(code);
  }
  uint8_t ask(char32_t cp) const {
    std::string utf8;
    append_utf8(utf8, cp);
    thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create(1, nullptr), pcre2_match_data_free);
    uint8_t c = kKnown;
    for (size_t k = 0; k < codes_.size(); ++k) {
      if (pcre2_match(codes_[k], reinterpret_cast<PCRE2_SPTR>(utf8.data()), utf8.size(), 0, 0, data.get(), nullptr) >
          0) {
        c |= static_cast<uint8_t>(1 << k);  // kLetter, kNumber, kSpace in the order of `expressions`
      }
    }
    return c;
  }

  std::array<pcre2_code*, 3> codes_{};
  uint8_t ascii_[0x80] = {};
  std::unique_ptr<std::atomic<uint8_t>[]> table_;  // 0: not asked yet
};

// The class of the character at text[i] (kEnd past the end), and where it ends.
inline uint8_t class_at(const Classes& classes, std::string_view text, size_t i, size_t& next) {
  if (i >= text.size()) {
    next = i;
    return kEnd;
  }
  const auto byte = static_cast<uint8_t>(text[i]);
  if (byte < 0x80) {
    next = i + 1;
    return classes.of(byte);
  }
  next = i;
  return classes.of(next_code_point(text, next));
}

// Neither letter, number nor space: [^\s\p{L}\p{N}].
inline bool is_other(uint8_t c) { return (c & (kLetter | kNumber | kSpace | kEnd)) == 0; }

// Where the run of characters whose class `in_run` takes, from i, ends.
// ASCII (most of most texts) is read a byte at a time.
template <class InRun>
inline size_t run_while(const Classes& classes, std::string_view text, size_t i, InRun in_run) {
  const size_t n = text.size();
  while (i < n) {
    const auto byte = static_cast<uint8_t>(text[i]);
    if (byte < 0x80) {
      if (!in_run(classes.of(byte))) return i;
      ++i;
      continue;
    }
    size_t next = i;
    if (!in_run(classes.of(next_code_point(text, next)))) return i;
    i = next;
  }
  return i;
}

inline size_t run_of(const Classes& classes, std::string_view text, size_t i, uint8_t mask) {
  return run_while(classes, text, i, [mask](uint8_t c) { return (c & mask) != 0; });
}

inline bool is_newline(char c) { return c == '\r' || c == '\n'; }

// PCRE2's caseless ASCII letter `lower` at text[i] (the long s U+017F
// folds to s); the byte after it, or 0 when it is not there.
size_t caseless_letter_at(std::string_view text, size_t i, char lower) {
  if (i >= text.size()) return 0;
  if ((text[i] | 0x20) == lower) return i + 1;
  if (lower == 's' && text.substr(i, 2) == "\xC5\xBF") return i + 2;
  return 0;
}

// The end of 's, 't, 're, 've, 'm, 'll or 'd where the apostrophe is at
// text[at]; 0 when none is there.
size_t contraction_at(std::string_view text, size_t at, bool caseless) {
  const size_t i = at + 1;
  auto letter = [&](size_t where, char lower) -> size_t {
    if (caseless) return caseless_letter_at(text, where, lower);
    return where < text.size() && text[where] == lower ? where + 1 : 0;
  };
  for (char single : {'s', 't', 'm', 'd'}) {
    if (const size_t end = letter(i, single)) return end;
  }
  for (const char* pair : {"re", "ve", "ll"}) {
    if (const size_t first = letter(i, pair[0])) {
      if (const size_t end = letter(first, pair[1])) return end;
    }
  }
  return 0;
}

}  // namespace

std::optional<SplitScanner> SplitScanner::of(std::string_view expression) {
  if (expression == kGpt2Split) return SplitScanner(Grammar{false, false, 0, false});
  if (expression == kLlama3Split) return SplitScanner(Grammar{true, true, 3, true});
  if (expression == kQwen2Split) return SplitScanner(Grammar{true, true, 1, true});
  return std::nullopt;
}

// The alternatives in the expressions' order; the first that matches wins,
// as in the regex engine.
size_t SplitScanner::match_at(std::string_view text, size_t at) const {
  const Classes& classes = Classes::get();
  if (at >= text.size()) return at;
  if (text[at] == '\'') {
    if (const size_t end = contraction_at(text, at, grammar_.caseless_contractions)) return end;
  }
  size_t next0 = at, next1 = at;
  const uint8_t c0 = class_at(classes, text, at, next0);
  const uint8_t c1 = class_at(classes, text, next0, next1);
  const bool space0 = text[at] == ' ';

  // Letters, after one character that may lead them.
  if (c0 & kLetter) return run_of(classes, text, next0, kLetter);
  const bool leads_letters =
      grammar_.any_before_letters ? !(c0 & kNumber) && !is_newline(text[at]) : space0;
  if (leads_letters && (c1 & kLetter)) return run_of(classes, text, next1, kLetter);

  // Numbers: up to max_digits of them, or any number after an optional space.
  if (grammar_.max_digits > 0) {
    if (c0 & kNumber) {
      size_t end = next0;
      for (int k = 1; k < grammar_.max_digits; ++k) {
        size_t next = end;
        if (!(class_at(classes, text, end, next) & kNumber)) break;
        end = next;
      }
      return end;
    }
  } else {
    if (c0 & kNumber) return run_of(classes, text, next0, kNumber);
    if (space0 && (c1 & kNumber)) return run_of(classes, text, next1, kNumber);
  }

  // Other characters after an optional space, then any line breaks.
  if (is_other(c0) || (space0 && is_other(c1))) {
    size_t end = run_while(classes, text, is_other(c0) ? next0 : next1, is_other);
    if (grammar_.newlines) {
      while (end < text.size() && is_newline(text[end])) ++end;
    }
    return end;
  }

  if (!(c0 & kSpace)) return at;
  const size_t spaces = run_of(classes, text, next0, kSpace);
  // \s*[\r\n]+: the spaces up to the last line break among them.
  if (grammar_.newlines) {
    for (size_t end = spaces; end > at; --end) {
      if (is_newline(text[end - 1])) return end;
    }
  }
  // \s+(?!\S): all of them at the end of the text, else all but the last.
  if (spaces == text.size()) return spaces;
  size_t last = spaces - 1;
  while ((static_cast<uint8_t>(text[last]) & 0xC0) == 0x80) --last;
  if (last > at) return last;
  return spaces;  // \s+
}

}  // namespace slm::tok
