#include "tokenizer/jinja/strings.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>

namespace slm::jinja {

std::vector<char32_t> code_points(std::string_view s) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < s.size();) out.push_back(tok::next_code_point(s, i));
  return out;
}

std::string from_code_points(const std::vector<char32_t>& cps) {
  std::string out;
  for (char32_t cp : cps) tok::append_utf8(out, cp);
  return out;
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  const std::vector<char32_t> cps = code_points(s);
  const std::vector<char32_t> set = chars ? code_points(*chars) : std::vector<char32_t>{};
  auto strippable = [&](char32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : tok::is_whitespace(c);
  };
  size_t begin = 0, end = cps.size();
  while (left && begin < end && strippable(cps[begin])) ++begin;
  while (right && end > begin && strippable(cps[end - 1])) --end;
  return from_code_points(std::vector<char32_t>(cps.begin() + static_cast<std::ptrdiff_t>(begin),
                                                cps.begin() + static_cast<std::ptrdiff_t>(end)));
}

std::string change_case(std::string_view s, Case mode) {
  std::string out;
  bool word_start = true;
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = tok::next_code_point(s, i);
    const auto c = static_cast<utf8proc_int32_t>(cp);
    bool upper = mode == Case::Upper;
    if (mode == Case::Title) upper = word_start;
    if (mode == Case::Capitalize) upper = out.empty();
    if (upper && cp == U'\u00DF') {
      out += "SS";  // the one full case mapping common in chat text (Python and JavaScript both do it)
      word_start = false;
      continue;
    }
    tok::append_utf8(out, static_cast<char32_t>(upper ? utf8proc_toupper(c) : utf8proc_tolower(c)));
    const utf8proc_category_t category = utf8proc_category(c);
    // str.title: a word is a run of cased letters.
    word_start = !(category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL || category == UTF8PROC_CATEGORY_LT);
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count, size_t pos) {
  if (count == 0) return s;
  std::string out;
  int64_t done = 0;
  if (from.empty()) {  // Python inserts `to` around every character
    for (size_t i = 0;; ) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
        check_text(out.size(), pos);
      }
      if (i == s.size()) break;
      tok::append_utf8(out, tok::next_code_point(s, i));
    }
    return out;
  }
  size_t last = 0;
  for (size_t at = s.find(from); at != std::string::npos && (count < 0 || done < count); at = s.find(from, last)) {
    out.append(s, last, at - last);
    out += to;
    check_text(out.size(), pos);
    last = at + from.size();
    ++done;
  }
  out.append(s, last);
  check_text(out.size(), pos);
  return out;
}

std::vector<std::string> split(const std::string& s, const std::optional<std::string>& separator, int64_t max_split, size_t pos) {
  std::vector<std::string> parts;
  if (!separator) {  // runs of whitespace, none at either end
    const std::vector<char32_t> cps = code_points(s);
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && tok::is_whitespace(cps[i])) ++i;
      if (i == cps.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
        size_t end = cps.size();
        while (end > i && tok::is_whitespace(cps[end - 1])) --end;
        parts.push_back(from_code_points({cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(end)}));
        break;
      }
      const size_t start = i;
      while (i < cps.size() && !tok::is_whitespace(cps[i])) ++i;
      parts.push_back(from_code_points({cps.begin() + static_cast<std::ptrdiff_t>(start), cps.begin() + static_cast<std::ptrdiff_t>(i)}));
      check_items(parts.size(), pos);
    }
    return parts;
  }
  size_t last = 0;
  for (size_t at = s.find(*separator); at != std::string::npos; at = s.find(*separator, last)) {
    if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) break;
    parts.push_back(s.substr(last, at - last));
    check_items(parts.size(), pos);
    last = at + separator->size();
  }
  parts.push_back(s.substr(last));
  return parts;
}

int64_t count_code_points(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

}  // namespace slm::jinja
