// Chat templates: a lexer, a parser to a small AST and a tree-walking
// interpreter for the Jinja subset Hugging Face chat templates use. Whitespace
// handling follows transformers (trim_blocks, lstrip_blocks, and the single
// trailing newline of the source dropped); values follow @huggingface/jinja
// where it agrees with Python Jinja, and Python Jinja where it does not
// (docs/chat-templates.md lists those places).
#include <slm/chat_template.h>
#include <slm/error.h>
#include <slm/tokenizer.h>

#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cmath>
#include <ctime>
#include <functional>
#include <cstdio>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace slm {

namespace {

// ---------------------------------------------------------------- errors

// A failure at a byte offset of the source; render() and the constructor
// turn it into an slm::Error with the origin and line:column.
struct TemplateError {
  size_t pos;
  std::string message;
};

template <class... Parts>
[[noreturn]] void fail_at(size_t pos, Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw TemplateError{pos, message.str()};
}

std::string location(std::string_view source, size_t pos) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < pos && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xC0) != 0x80) {
      ++column;  // columns count characters, not bytes
    }
  }
  return std::to_string(line) + ":" + std::to_string(column);
}

// ---------------------------------------------------------------- values

struct Value;
using Items = std::vector<Value>;
struct Dict;
struct Args;
class Interpreter;
struct Scope;
using Callable = std::function<Value(Args&, Scope&, size_t pos)>;

enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

struct Value {
  explicit Value(Kind k = Kind::Undefined) : kind(k) {}
  Kind kind;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;
  std::shared_ptr<Items> list;
  std::shared_ptr<Dict> dict;  // Dict and Namespace (a namespace is shared, so assignments are seen by all)
  std::shared_ptr<const Callable> function;

  static Value none() { return Value(Kind::None); }
  static Value of(bool b) {
    Value v{Kind::Bool};
    v.boolean = b;
    return v;
  }
  static Value of(int64_t i) {
    Value v{Kind::Int};
    v.integer = i;
    return v;
  }
  static Value of(double d) {
    Value v{Kind::Float};
    v.number = d;
    return v;
  }
  static Value of(std::string s) {
    Value v{Kind::String};
    v.text = std::move(s);
    return v;
  }
  static Value of(Items items) {
    Value v{Kind::List};
    v.list = std::make_shared<Items>(std::move(items));
    return v;
  }
  static Value of(Callable f) {
    Value v{Kind::Function};
    v.function = std::make_shared<const Callable>(std::move(f));
    return v;
  }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float; }
  double as_double() const { return kind == Kind::Int ? static_cast<double>(integer) : kind == Kind::Float ? number : boolean; }
};

// Insertion-ordered, as Python dicts and JS Maps are; chat messages hold a
// handful of keys, so a vector is the fast choice.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  void set(const std::string& key, Value value) {
    for (auto& [k, v] : items) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    items.emplace_back(key, std::move(value));
  }
};

Value make_dict(Dict d, Kind kind = Kind::Dict) {
  Value v{kind};
  v.dict = std::make_shared<Dict>(std::move(d));
  return v;
}

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // Positional `index`, else keyword `name`, else nullptr.
  const Value* get(size_t index, std::string_view name) const {
    if (index < positional.size()) return &positional[index];
    for (const auto& [k, v] : keyword) {
      if (k == name) return &v;
    }
    return nullptr;
  }
};

// With its article, for messages: "cannot compare an integer with a string".
const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::Undefined: return "an undefined value";
    case Kind::None: return "none";
    case Kind::Bool: return "a boolean";
    case Kind::Int: return "an integer";
    case Kind::Float: return "a float";
    case Kind::String: return "a string";
    case Kind::List: return "a list";
    case Kind::Dict: return "a dict";
    case Kind::Namespace: return "a namespace";
    case Kind::Function: return "a function";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return v.boolean;
    case Kind::Int: return v.integer != 0;
    case Kind::Float: return v.number != 0.0;
    case Kind::String: return !v.text.empty();
    case Kind::List: return !v.list->empty();
    case Kind::Dict: return !v.dict->items.empty();
    case Kind::Namespace:
    case Kind::Function: return true;
  }
  return false;
}

Value from_json(const ChatJson& j) {
  switch (j.type()) {
    case ChatJson::value_t::null: return Value::none();
    case ChatJson::value_t::boolean: return Value::of(j.get<bool>());
    case ChatJson::value_t::number_integer: return Value::of(j.get<int64_t>());
    case ChatJson::value_t::number_unsigned: return Value::of(static_cast<int64_t>(j.get<uint64_t>()));
    case ChatJson::value_t::number_float: return Value::of(j.get<double>());
    case ChatJson::value_t::string: return Value::of(j.get<std::string>());
    case ChatJson::value_t::array: {
      Items items;
      items.reserve(j.size());
      for (const ChatJson& item : j) items.push_back(from_json(item));
      return Value::of(std::move(items));
    }
    case ChatJson::value_t::object: {
      Dict d;
      d.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.items.emplace_back(it.key(), from_json(it.value()));
      return make_dict(std::move(d));
    }
    default: return Value{};
  }
}

// Python's repr of a float: the shortest digits that read back, in fixed
// notation for exponents -4..15 and scientific otherwise, and ".0" on whole numbers.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, d, std::chars_format::scientific);
  std::string sci(buffer, end);  // e.g. "-1.25e+02"
  const size_t e = sci.find('e');
  const int exponent = std::stoi(sci.substr(e + 1));
  std::string digits;
  const bool negative = sci[0] == '-';
  for (size_t i = negative ? 1 : 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp[16];
    std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  if (exponent < 0) return out + "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  const size_t point = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= point) return out + digits + std::string(point - digits.size(), '0') + ".0";
  return out + digits.substr(0, point) + "." + digits.substr(point);
}

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80 && ensure_ascii) {
      const char32_t cp = tok::next_code_point(s, i);
      char buffer[16];
      if (cp >= 0x10000) {
        const char32_t v = cp - 0x10000;
        std::snprintf(buffer, sizeof buffer, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(cp));
      }
      out += buffer;
      continue;
    }
    ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || (c == 0x7F && ensure_ascii)) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

struct JsonStyle {
  int indent = -1;  // < 0: one line
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_separator = ", ", key_separator = ": ";
};

// json.dumps as transformers' tojson calls it (and as a list or dict prints).
void append_json(std::string& out, const Value& v, const JsonStyle& style, int depth, size_t pos) {
  auto newline = [&](int level) {
    if (style.indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(style.indent * level), ' ');
  };
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: out += "null"; return;
    case Kind::Bool: out += v.boolean ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.integer); return;
    case Kind::Float:
      if (!std::isfinite(v.number)) out += std::isnan(v.number) ? "NaN" : v.number < 0 ? "-Infinity" : "Infinity";
      else out += float_repr(v.number);
      return;
    case Kind::String: append_json_string(out, v.text, style.ensure_ascii); return;
    case Kind::List: {
      out += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth + 1);
        append_json(out, (*v.list)[i], style, depth + 1, pos);
      }
      if (!v.list->empty()) newline(depth);
      out += ']';
      return;
    }
    case Kind::Dict:
    case Kind::Namespace: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.dict->items) items.push_back(&item);
      if (style.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth + 1);
        append_json_string(out, items[i]->first, style.ensure_ascii);
        out += style.key_separator;
        append_json(out, items[i]->second, style, depth + 1, pos);
      }
      if (!items.empty()) newline(depth);
      out += '}';
      return;
    }
    case Kind::Function: fail_at(pos, "a function cannot be written as JSON");
  }
}

// What {{ value }} prints. Lists and dicts print as JSON, as in @huggingface/jinja.
std::string to_string(const Value& v, size_t pos) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return "";
    case Kind::Bool: return v.boolean ? "true" : "false";
    case Kind::Int: return std::to_string(v.integer);
    case Kind::Float: return float_repr(v.number);
    case Kind::String: return v.text;
    case Kind::Function: return "<function>";
    default: {
      std::string out;
      append_json(out, v, JsonStyle{}, 0, pos);
      return out;
    }
  }
}

bool equal(const Value& a, const Value& b) {
  if ((a.is_number() || a.kind == Kind::Bool) && (b.is_number() || b.kind == Kind::Bool)) {
    if (a.kind == Kind::Int && b.kind == Kind::Int) return a.integer == b.integer;
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.text == b.text;
    case Kind::List:
      return a.list->size() == b.list->size() &&
             std::equal(a.list->begin(), a.list->end(), b.list->begin(), [](const Value& x, const Value& y) { return equal(x, y); });
    case Kind::Dict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* other = b.dict->find(k);
        if (!other || !equal(v, *other)) return false;
      }
      return true;
    }
    default: return a.dict == b.dict && a.function == b.function;
  }
}

// ---------------------------------------------------------------- strings

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

// Python's str.strip family: whitespace, or any of `chars`.
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

enum class Case { Upper, Lower, Title, Capitalize };

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

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (count == 0) return s;
  std::string out;
  int64_t done = 0;
  if (from.empty()) {  // Python inserts `to` around every character
    const std::vector<char32_t> cps = code_points(s);
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cps.size()) tok::append_utf8(out, cps[i]);
    }
    return out;
  }
  size_t last = 0;
  for (size_t at = s.find(from); at != std::string::npos && (count < 0 || done < count); at = s.find(from, last)) {
    out.append(s, last, at - last);
    out += to;
    last = at + from.size();
    ++done;
  }
  out.append(s, last);
  return out;
}

std::vector<std::string> split(const std::string& s, const std::optional<std::string>& separator, int64_t max_split) {
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
    }
    return parts;
  }
  size_t last = 0;
  for (size_t at = s.find(*separator); at != std::string::npos; at = s.find(*separator, last)) {
    if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) break;
    parts.push_back(s.substr(last, at - last));
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

// ---------------------------------------------------------------- lexer

enum class Tok {
  Text, Comment, OpenExpression, CloseExpression, OpenStatement, CloseStatement,
  Name, String, Int, Float, Operator, End
};

struct Token {
  Tok type;
  std::string text;  // text, name, string value, number or operator spelling
  size_t pos;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Removes trailing whitespace (Unicode, as JavaScript's trimEnd) from a text token.
void trim_text_end(std::vector<Token>& tokens) {
  if (tokens.empty() || tokens.back().type != Tok::Text) return;
  tokens.back().text = std::string(tok::trim_whitespace(tokens.back().text, false, true));
  if (tokens.back().text.empty()) tokens.pop_back();
}

size_t skip_whitespace(std::string_view src, size_t i) {
  while (i < src.size()) {
    size_t next = i;
    if (!tok::is_whitespace(tok::next_code_point(src, next))) break;
    i = next;
  }
  return i;
}

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Token> run() {
    size_t i = 0;
    while (i < src_.size()) {
      // Text up to the next tag.
      size_t next = i;
      while (next < src_.size() && !is_tag_start(next)) ++next;
      if (next > i) tokens_.push_back({Tok::Text, std::string(src_.substr(i, next - i)), i});
      if (next >= src_.size()) break;
      i = tag(next);
    }
    std::erase_if(tokens_, [](const Token& t) { return t.type == Tok::Comment; });
    tokens_.push_back({Tok::End, "", src_.size()});
    return std::move(tokens_);
  }

 private:
  bool is_tag_start(size_t i) const {
    return src_[i] == '{' && i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#');
  }

  // lstrip_blocks: spaces and tabs between the start of a line and a block
  // or comment tag are not output.
  void lstrip_before(size_t tag_pos) {
    size_t start = tag_pos;
    while (start > 0 && (src_[start - 1] == ' ' || src_[start - 1] == '\t')) --start;
    if (start != tag_pos && (start == 0 || src_[start - 1] == '\n') && !tokens_.empty() &&
        tokens_.back().type == Tok::Text && tokens_.back().pos + tokens_.back().text.size() == tag_pos) {
      std::string& text = tokens_.back().text;
      text.resize(text.size() - (tag_pos - start));
      if (text.empty()) tokens_.pop_back();
    }
  }

  // After a block or comment tag: `-` skips all whitespace; otherwise
  // trim_blocks drops one newline.
  size_t after_tag(size_t i, bool strip) const {
    if (strip) return skip_whitespace(src_, i);
    if (i < src_.size() && src_[i] == '\n') return i + 1;
    return i;
  }

  size_t tag(size_t start) {
    const char kind = src_[start + 1];
    const bool strip_before = start + 2 < src_.size() && src_[start + 2] == '-';
    if (kind != '{') lstrip_before(start);
    if (strip_before) trim_text_end(tokens_);
    size_t i = start + (strip_before ? 3 : 2);
    if (kind == '#') {
      const size_t end = src_.find("#}", i);
      if (end == std::string_view::npos) fail_at(start, "comment is not closed: expected '#}'");
      const bool strip_after = end > i && src_[end - 1] == '-';
      // Kept until the end of lexing so that a later '{%-' strips only the
      // text after the comment, as Jinja does.
      tokens_.push_back({Tok::Comment, "", start});
      return after_tag(end + 2, strip_after);
    }
    tokens_.push_back({kind == '{' ? Tok::OpenExpression : Tok::OpenStatement, "", start});
    const char close = kind == '{' ? '}' : '%';
    int brace_depth = 0;  // a dict literal's '}}' does not close {{ ... }}
    while (true) {
      while (i < src_.size() && is_space(src_[i])) ++i;
      if (i >= src_.size()) {
        fail_at(start, "tag is not closed: expected '", close == '}' ? "}}" : "%}", "'");
      }
      const bool strip_after = src_[i] == '-' && i + 2 < src_.size() && src_.compare(i + 1, 2, std::string{close, '}'}) == 0;
      if ((strip_after || src_.compare(i, 2, std::string{close, '}'}) == 0) && (close == '%' || brace_depth == 0)) {
        const size_t end = i + (strip_after ? 3 : 2);
        tokens_.push_back({kind == '{' ? Tok::CloseExpression : Tok::CloseStatement, "", i});
        if (kind == '{') return strip_after ? skip_whitespace(src_, end) : end;
        return after_tag(end, strip_after);
      }
      i = expression_token(i, brace_depth);
    }
  }

  size_t expression_token(size_t i, int& brace_depth) {
    const char c = src_[i];
    if (c == '\'' || c == '"') return string_literal(i);
    if (c >= '0' && c <= '9') {
      size_t end = i;
      while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
      auto digit = [&](size_t at) { return at < src_.size() && std::isdigit(static_cast<unsigned char>(src_[at])); };
      bool is_float = false;
      // After '.', digits are an index (x.0.1), never a fraction.
      if (!(tokens_.back().type == Tok::Operator && tokens_.back().text == ".")) {
        if (end < src_.size() && src_[end] == '.' && digit(end + 1)) {
          is_float = true;
          ++end;
          while (digit(end)) ++end;
        }
        const size_t sign = end + 1 < src_.size() && (src_[end + 1] == '+' || src_[end + 1] == '-') ? 1 : 0;
        if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E') && digit(end + 1 + sign)) {
          is_float = true;
          end += 1 + sign;
          while (digit(end)) ++end;
        }
      }
      tokens_.push_back({is_float ? Tok::Float : Tok::Int, std::string(src_.substr(i, end - i)), i});
      return end;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t end = i;
      while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
      tokens_.push_back({Tok::Name, std::string(src_.substr(i, end - i)), i});
      return end;
    }
    static constexpr std::string_view kOperators[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~",
                                                      "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="};
    for (std::string_view op : kOperators) {
      if (src_.substr(i, op.size()) == op) {
        if (op == "{") ++brace_depth;
        if (op == "}") --brace_depth;
        tokens_.push_back({Tok::Operator, std::string(op), i});
        return i + op.size();
      }
    }
    size_t end = i;
    fail_at(i, "unexpected character '", tok::next_code_point(src_, end) < 0x80 ? std::string(1, c) : std::string(src_.substr(i, end - i)), "'");
  }

  size_t string_literal(size_t start) {
    const char quote = src_[start];
    std::string value;
    size_t i = start + 1;
    while (true) {
      if (i >= src_.size()) fail_at(start, "string literal is not closed: expected ", quote);
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) fail_at(i, "string literal is not closed: expected ", quote);
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\\': value += '\\'; break;
        case 'x':
        case 'u': {
          const size_t digits = e == 'x' ? 2 : 4;
          const std::string_view hex = src_.substr(i, digits);
          unsigned code = 0;
          const auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), code, 16);
          if (hex.size() != digits || ec != std::errc() || end != hex.data() + hex.size()) {
            fail_at(i - 2, "invalid escape \\", e, ": expected ", digits, " hexadecimal digits");
          }
          tok::append_utf8(value, static_cast<char32_t>(code));
          i += digits;
          break;
        }
        default: fail_at(i - 2, "unknown escape \\", e, " in a string literal");
      }
    }
    tokens_.push_back({Tok::String, std::move(value), start});
    return i + 1;
  }

  std::string_view src_;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------- AST

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct Expr {
  enum class Type {
    Literal, Name, List, Dict, Attr, Index, Slice, Call, Filter, Test, Unary, Binary, And, Or, Ternary, Select
  };
  Type type;
  size_t pos;
  std::string name;             // Name, Attr, Filter, Test: the name; Unary, Binary: the operator
  Value literal;                // Literal
  std::vector<ExprPtr> items;   // operands; Dict: key, value, key, value ...; Slice: object, start, stop, step (null when absent)
  CallArgs args;                // Call, Filter, Test
  bool negate = false;          // Test: `is not`
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Param {
  std::string name;
  ExprPtr default_value;
};

struct Stmt {
  enum class Type { Text, Output, If, For, Set, Macro, CallBlock, FilterBlock, Break, Continue, Scope };
  Type type;
  size_t pos;
  std::string text;                // Text; Macro name; Set: the attribute of `ns.attr = ...`
  ExprPtr expr;                    // Output, If, For (iterable), Set (value), CallBlock (the call), FilterBlock (the filter)
  ExprPtr condition;               // For: `for x in y if condition`
  std::vector<std::string> names;  // For and Set targets
  std::vector<Param> params;       // Macro, CallBlock (the caller's parameters)
  Body body, orelse;
};

// ---------------------------------------------------------------- parser

const std::unordered_set<std::string_view>& filter_names() {
  static const std::unordered_set<std::string_view> names = {
      "abs",     "capitalize", "count",  "d",       "default", "first",
      "float",   "indent",     "int",    "items",   "join",    "last",
      "length",  "list",       "lower",  "map",     "max",     "min",
      "reject",  "rejectattr", "replace", "reverse", "round",  "safe",
      "select",  "selectattr", "sort",   "string",  "title",   "tojson",
      "trim",    "unique",     "upper",  "dictsort", "wordcount", "bool"};
  return names;
}

const std::unordered_set<std::string_view>& test_names() {
  static const std::unordered_set<std::string_view> names = {
      "defined", "undefined", "none",   "string",  "number",   "integer",
      "float",   "boolean",   "mapping", "iterable", "sequence", "true",
      "false",   "equalto",   "eq",     "==",      "ne",       "!=",
      "odd",     "even",      "in",     "callable", "lower",   "upper",
      "gt",      "ge",        "lt",     "le",      "divisibleby"};
  return names;
}

// Templates come with model files: nesting is bounded so that no template
// can exhaust the stack of the recursive parser or interpreter.
constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body program() { return block({}); }

 private:
  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(at_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[std::min(at_++, tokens_.size() - 1)]; }
  bool is_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Operator && peek(ahead).text == op;
  }
  bool is_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Name && peek(ahead).text == name;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::End: return "the end of the template";
      case Tok::Text:
      case Tok::Comment: return "text";
      case Tok::OpenExpression: return "'{{'";
      case Tok::CloseExpression: return "'}}'";
      case Tok::OpenStatement: return "'{%'";
      case Tok::CloseStatement: return "'%}'";
      case Tok::String: return "a string";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(std::string_view op, std::string_view context) {
    if (!is_op(op)) fail_at(peek().pos, "expected '", op, "' ", context, ", got ", describe(peek()));
    ++at_;
  }
  void expect(Tok type, std::string_view what) {
    if (peek().type != type) fail_at(peek().pos, "expected ", what, ", got ", describe(peek()));
    ++at_;
  }
  std::string expect_name(std::string_view what) {
    if (peek().type != Tok::Name) fail_at(peek().pos, "expected ", what, ", got ", describe(peek()));
    return next().text;
  }
  void end_statement() { expect(Tok::CloseStatement, "'%}'"); }

  // Statements up to (not including) a `{% name %}` in `ends`.
  Body block(std::initializer_list<std::string_view> ends) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.type == Tok::End) {
        if (ends.size() == 0) return body;
        std::string names;
        for (std::string_view e : ends) names += (names.empty() ? "'{% " : " or '{% ") + std::string(e) + " %}'";
        fail_at(t.pos, "unexpected end of the template: expected ", names);
      }
      if (t.type == Tok::OpenStatement && peek(1).type == Tok::Name &&
          std::find(ends.begin(), ends.end(), peek(1).text) != ends.end()) {
        return body;
      }
      body.push_back(statement());
    }
  }

  std::unique_ptr<Stmt> make(Stmt::Type type, size_t pos) {
    auto s = std::make_unique<Stmt>();
    s->type = type;
    s->pos = pos;
    return s;
  }

  std::unique_ptr<Stmt> statement() {
    const Nesting nesting(*this, peek().pos);
    const Token& t = next();
    if (t.type == Tok::Text) {
      auto s = make(Stmt::Type::Text, t.pos);
      s->text = t.text;
      return s;
    }
    if (t.type == Tok::OpenExpression) {
      auto s = make(Stmt::Type::Output, t.pos);
      s->expr = expression();
      expect(Tok::CloseExpression, "'}}'");
      return s;
    }
    const size_t pos = t.pos;
    const size_t keyword_pos = peek().pos;
    const std::string keyword = expect_name("a statement name after '{%'");
    if (keyword == "if") return if_statement(pos);
    if (keyword == "for") return for_statement(pos);
    if (keyword == "set") return set_statement(pos);
    if (keyword == "macro") return macro_statement(pos);
    if (keyword == "call") return call_statement(pos);
    if (keyword == "filter") return filter_statement(pos);
    if (keyword == "generation") {  // the assistant-mask marker of transformers; renders its body
      end_statement();
      auto s = make(Stmt::Type::Scope, pos);
      s->body = block({"endgeneration"});
      close("endgeneration");
      return s;
    }
    if (keyword == "break" || keyword == "continue") {
      end_statement();
      return make(keyword == "break" ? Stmt::Type::Break : Stmt::Type::Continue, pos);
    }
    static constexpr std::string_view kClosers[] = {"elif", "else", "endif", "endfor", "endset", "endmacro",
                                                    "endcall", "endfilter", "endgeneration"};
    if (std::find(std::begin(kClosers), std::end(kClosers), keyword) != std::end(kClosers)) {
      fail_at(pos, "unexpected '{% ", keyword, " %}'");
    }
    fail_at(keyword_pos, "unknown statement '", keyword, "'");
  }

  void close(std::string_view end) {
    expect(Tok::OpenStatement, "'{%'");
    if (!is_name(end)) fail_at(peek().pos, "expected '", end, "'");
    ++at_;
    end_statement();
  }

  std::unique_ptr<Stmt> if_statement(size_t pos) {
    auto s = make(Stmt::Type::If, pos);
    s->expr = expression();
    end_statement();
    s->body = block({"elif", "else", "endif"});
    const size_t branch = peek().pos;
    ++at_;
    const std::string which = next().text;
    if (which == "elif") {
      s->orelse.push_back(if_statement(branch));
      return s;  // the innermost elif consumed the endif
    }
    if (which == "else") {
      end_statement();
      s->orelse = block({"endif"});
      ++at_;
      ++at_;
    }
    end_statement();
    return s;
  }

  std::unique_ptr<Stmt> for_statement(size_t pos) {
    auto s = make(Stmt::Type::For, pos);
    do {
      s->names.push_back(expect_name("a loop variable"));
    } while (is_op(",") && (++at_, true));
    if (!is_name("in")) fail_at(peek().pos, "expected 'in' after the loop variable, got ", describe(peek()));
    ++at_;
    s->expr = or_expression();
    if (is_name("if")) {
      ++at_;
      s->condition = or_expression();
    }
    end_statement();
    s->body = block({"else", "endfor"});
    if (is_name("else", 1)) {
      at_ += 2;
      end_statement();
      s->orelse = block({"endfor"});
    }
    close("endfor");
    return s;
  }

  std::unique_ptr<Stmt> set_statement(size_t pos) {
    auto s = make(Stmt::Type::Set, pos);
    s->names.push_back(expect_name("a variable name after 'set'"));
    if (is_op(".")) {
      ++at_;
      s->text = expect_name("an attribute name");
    } else {
      while (is_op(",")) {
        ++at_;
        s->names.push_back(expect_name("a variable name"));
      }
    }
    if (is_op("=")) {
      ++at_;
      s->expr = expression_sequence();
      end_statement();
      return s;
    }
    if (s->names.size() > 1) fail_at(peek().pos, "expected '=' after the variables, got ", describe(peek()));
    end_statement();
    s->body = block({"endset"});
    close("endset");
    return s;
  }

  std::vector<Param> parameters() {
    std::vector<Param> params;
    expect_op("(", "before the parameters");
    while (!is_op(")")) {
      Param p;
      p.name = expect_name("a parameter name");
      if (is_op("=")) {
        ++at_;
        p.default_value = expression();
      } else if (!params.empty() && params.back().default_value) {
        fail_at(peek().pos, "parameter '", p.name, "' without a default follows one with a default");
      }
      params.push_back(std::move(p));
      if (!is_op(",")) break;
      ++at_;
    }
    expect_op(")", "after the parameters");
    return params;
  }

  std::unique_ptr<Stmt> macro_statement(size_t pos) {
    auto s = make(Stmt::Type::Macro, pos);
    s->text = expect_name("a macro name");
    s->params = parameters();
    end_statement();
    s->body = block({"endmacro"});
    close("endmacro");
    return s;
  }

  std::unique_ptr<Stmt> call_statement(size_t pos) {
    auto s = make(Stmt::Type::CallBlock, pos);
    if (is_op("(")) s->params = parameters();
    s->expr = postfix(primary());
    if (s->expr->type != Expr::Type::Call) fail_at(s->expr->pos, "expected a macro call after 'call'");
    end_statement();
    s->body = block({"endcall"});
    close("endcall");
    return s;
  }

  std::unique_ptr<Stmt> filter_statement(size_t pos) {
    auto s = make(Stmt::Type::FilterBlock, pos);
    s->expr = filter_call(nullptr);
    end_statement();
    s->body = block({"endfilter"});
    close("endfilter");
    return s;
  }

  // ---- expressions, loosest binding first

  ExprPtr node(Expr::Type type, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->type = type;
    e->pos = pos;
    return e;
  }

  // `a, b` (a tuple) where a statement allows it: `set x = 1, 2`.
  ExprPtr expression_sequence() {
    ExprPtr first = expression();
    if (!is_op(",")) return first;
    auto list = node(Expr::Type::List, first->pos);
    list->items.push_back(std::move(first));
    while (is_op(",")) {
      ++at_;
      list->items.push_back(expression());
    }
    return list;
  }

  ExprPtr expression() {
    const Nesting nesting(*this, peek().pos);
    ExprPtr value = or_expression();
    if (!is_name("if")) return value;
    const size_t pos = next().pos;
    ExprPtr condition = or_expression();
    auto e = node(Expr::Type::Select, pos);
    e->items.push_back(std::move(condition));
    e->items.push_back(std::move(value));
    if (is_name("else")) {
      ++at_;
      e->type = Expr::Type::Ternary;
      e->items.push_back(expression());
    }
    return e;
  }

  ExprPtr or_expression() {
    ExprPtr left = and_expression();
    while (is_name("or")) {
      auto e = node(Expr::Type::Or, next().pos);
      e->items.push_back(std::move(left));
      e->items.push_back(and_expression());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr and_expression() {
    ExprPtr left = not_expression();
    while (is_name("and")) {
      auto e = node(Expr::Type::And, next().pos);
      e->items.push_back(std::move(left));
      e->items.push_back(not_expression());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr not_expression() {
    if (!is_name("not")) return comparison();
    const Nesting nesting(*this, peek().pos);
    auto e = node(Expr::Type::Unary, next().pos);
    e->name = "not";
    e->items.push_back(not_expression());
    return e;
  }

  ExprPtr binary(std::string op, size_t pos, ExprPtr left, ExprPtr right) {
    auto e = node(Expr::Type::Binary, pos);
    e->name = std::move(op);
    e->items.push_back(std::move(left));
    e->items.push_back(std::move(right));
    return e;
  }

  ExprPtr comparison() {
    ExprPtr left = additive();
    while (true) {
      const size_t pos = peek().pos;
      std::string op;
      if (is_name("not") && is_name("in", 1)) {
        at_ += 2;
        op = "not in";
      } else if (is_name("in")) {
        ++at_;
        op = "in";
      } else if (peek().type == Tok::Operator &&
                 (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == "<=" ||
                  peek().text == ">" || peek().text == ">=")) {
        op = next().text;
      } else {
        return left;
      }
      left = binary(op, pos, std::move(left), additive());
    }
  }

  ExprPtr additive() {
    ExprPtr left = multiplicative();
    while (is_op("+") || is_op("-") || is_op("~")) {
      const Token& op = next();
      left = binary(op.text, op.pos, std::move(left), multiplicative());
    }
    return left;
  }

  ExprPtr multiplicative() {
    ExprPtr left = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = next();
      left = binary(op.text, op.pos, std::move(left), power());
    }
    return left;
  }

  ExprPtr power() {
    ExprPtr left = test();
    while (is_op("**")) {
      const Token& op = next();
      left = binary(op.text, op.pos, std::move(left), test());
    }
    return left;
  }

  ExprPtr test() {
    ExprPtr operand = filtered();
    while (is_name("is")) {
      auto e = node(Expr::Type::Test, next().pos);
      if (is_name("not")) {
        ++at_;
        e->negate = true;
      }
      const Token& name = peek();
      if (name.type == Tok::Name || (name.type == Tok::Operator && (name.text == "==" || name.text == "!="))) {
        e->name = next().text;
      } else {
        fail_at(name.pos, "expected a test name after 'is', got ", describe(name));
      }
      if (!test_names().contains(e->name)) fail_at(name.pos, "unknown test '", e->name, "'");
      if (is_op("(")) {
        e->args = arguments();
      } else if (test_takes_argument(e->name) && starts_bare_argument()) {
        e->args.positional.push_back(primary_postfix());  // `x is divisibleby 3`, `x is in [1, 2]`
      }
      e->items.push_back(std::move(operand));
      operand = std::move(e);
    }
    return operand;
  }

  // As Jinja decides whether a test without parentheses has an argument.
  bool starts_bare_argument() const {
    const Token& t = peek();
    if (t.type == Tok::String || t.type == Tok::Int || t.type == Tok::Float) return true;
    if (t.type == Tok::Operator) return t.text == "[" || t.text == "{";
    return t.type == Tok::Name && !is_name("and") && !is_name("or") && !is_name("else") && !is_name("if") &&
           !is_name("is") && !is_name("not") && !is_name("in");
  }

  static bool test_takes_argument(std::string_view name) {
    return name == "equalto" || name == "eq" || name == "==" || name == "ne" || name == "!=" || name == "in" ||
           name == "gt" || name == "ge" || name == "lt" || name == "le" || name == "divisibleby";
  }

  ExprPtr filtered() {
    ExprPtr operand = unary();
    while (is_op("|")) {
      ++at_;
      operand = filter_call(std::move(operand));
    }
    return operand;
  }

  // `name` or `name(args)` after '|' (or in {% filter %}), applied to `operand`.
  ExprPtr filter_call(ExprPtr operand) {
    const Token& name = peek();
    auto e = node(Expr::Type::Filter, name.pos);
    e->name = expect_name("a filter name");
    if (!filter_names().contains(e->name)) fail_at(name.pos, "unknown filter '", e->name, "'");
    if (is_op("(")) e->args = arguments();
    if (operand) e->items.push_back(std::move(operand));
    return e;
  }

  ExprPtr unary() {
    if (is_op("-") || is_op("+")) {
      const Nesting nesting(*this, peek().pos);
      const Token& op = next();
      auto e = node(Expr::Type::Unary, op.pos);
      e->name = op.text;
      e->items.push_back(unary());
      return e;
    }
    return primary_postfix();
  }

  ExprPtr primary_postfix() { return postfix(primary()); }

  CallArgs arguments() {
    CallArgs args;
    expect_op("(", "before the arguments");
    while (!is_op(")")) {
      if (peek().type == Tok::Name && is_op("=", 1)) {
        std::string key = next().text;
        ++at_;
        args.keyword.emplace_back(std::move(key), expression());
      } else {
        if (!args.keyword.empty()) fail_at(peek().pos, "a positional argument follows a keyword argument");
        args.positional.push_back(expression());
      }
      if (!is_op(",")) break;
      ++at_;
    }
    expect_op(")", "after the arguments");
    return args;
  }

  ExprPtr postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        const size_t pos = next().pos;
        auto attr = node(Expr::Type::Attr, pos);
        const Token& name = next();
        if (name.type == Tok::Name) {
          attr->name = name.text;
          attr->pos = name.pos;  // errors point at the attribute, not the dot
        } else if (name.type == Tok::Int) {  // x.0 as x[0]
          attr->type = Expr::Type::Index;
          auto index = node(Expr::Type::Literal, name.pos);
          index->literal = Value::of(static_cast<int64_t>(std::stoll(name.text)));
          attr->items.push_back(std::move(e));
          attr->items.push_back(std::move(index));
          e = std::move(attr);
          continue;
        } else {
          fail_at(name.pos, "expected an attribute name after '.', got ", describe(name));
        }
        attr->items.push_back(std::move(e));
        e = std::move(attr);
      } else if (is_op("[")) {
        const size_t pos = next().pos;
        ExprPtr parts[3];
        int colons = 0;
        while (!is_op("]")) {
          if (is_op(":")) {
            if (++colons > 2) fail_at(peek().pos, "a slice takes at most start:stop:step");
            ++at_;
          } else {
            if (parts[colons]) fail_at(peek().pos, "expected ']' or ':', got ", describe(peek()));
            parts[colons] = expression();
          }
        }
        ++at_;
        if (colons == 0) {
          if (!parts[0]) fail_at(pos, "expected an index inside '[]'");
          auto index = node(Expr::Type::Index, pos);
          index->items.push_back(std::move(e));
          index->items.push_back(std::move(parts[0]));
          e = std::move(index);
        } else {
          auto slice = node(Expr::Type::Slice, pos);
          slice->items.push_back(std::move(e));
          for (ExprPtr& part : parts) slice->items.push_back(std::move(part));
          e = std::move(slice);
        }
      } else if (is_op("(")) {
        auto call = node(Expr::Type::Call, e->pos);
        call->args = arguments();
        call->items.push_back(std::move(e));
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr primary() {
    const Token& t = next();
    switch (t.type) {
      case Tok::Int:
      case Tok::Float: {
        auto e = node(Expr::Type::Literal, t.pos);
        if (t.type == Tok::Int) {
          int64_t v = 0;
          if (std::from_chars(t.text.data(), t.text.data() + t.text.size(), v).ec != std::errc()) {
            fail_at(t.pos, "integer literal out of range");
          }
          e->literal = Value::of(v);
        } else {
          e->literal = Value::of(std::stod(t.text));
        }
        return e;
      }
      case Tok::String: {
        std::string value = t.text;
        while (peek().type == Tok::String) value += next().text;  // "a" "b" is "ab"
        auto e = node(Expr::Type::Literal, t.pos);
        e->literal = Value::of(std::move(value));
        return e;
      }
      case Tok::Name: {
        auto e = node(Expr::Type::Literal, t.pos);
        if (t.text == "true" || t.text == "True") e->literal = Value::of(true);
        else if (t.text == "false" || t.text == "False") e->literal = Value::of(false);
        else if (t.text == "none" || t.text == "None") e->literal = Value::none();
        else {
          e->type = Expr::Type::Name;
          e->name = t.text;
        }
        return e;
      }
      case Tok::Operator:
        if (t.text == "(") {
          if (is_op(")")) {  // the empty tuple
            ++at_;
            return node(Expr::Type::List, t.pos);
          }
          ExprPtr inner = expression_sequence();
          expect_op(")", "to close '('");
          return inner;
        }
        if (t.text == "[") {
          auto e = node(Expr::Type::List, t.pos);
          while (!is_op("]")) {
            e->items.push_back(expression());
            if (!is_op(",")) break;
            ++at_;
          }
          expect_op("]", "to close '['");
          return e;
        }
        if (t.text == "{") {
          auto e = node(Expr::Type::Dict, t.pos);
          while (!is_op("}")) {
            e->items.push_back(expression());
            expect_op(":", "between a key and its value");
            e->items.push_back(expression());
            if (!is_op(",")) break;
            ++at_;
          }
          expect_op("}", "to close '{'");
          return e;
        }
        break;
      default: break;
    }
    fail_at(t.pos, "expected an expression, got ", describe(t));
  }

  // Counts one level of recursion while alive.
  class Nesting {
   public:
    Nesting(Parser& parser, size_t pos) : depth_(parser.depth_) {
      if (++depth_ > kMaxNesting) fail_at(pos, "nested more than ", kMaxNesting, " levels deep");
    }
    ~Nesting() { --depth_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    int& depth_;
  };

  std::vector<Token> tokens_;
  size_t at_ = 0;
  int depth_ = 0;
};

// ---------------------------------------------------------------- interpreter

struct Scope {
  Scope* parent = nullptr;
  std::unordered_map<std::string, Value> vars;

  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      if (const auto it = s->vars.find(name); it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { Normal, Break, Continue };

class Interpreter {
 public:
  Flow run(const Body& body, Scope& scope, std::string& out) {
    for (const auto& s : body) {
      const Flow flow = execute(*s, scope, out);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

 private:
  Flow execute(const Stmt& s, Scope& scope, std::string& out) {
    switch (s.type) {
      case Stmt::Type::Text: out += s.text; return Flow::Normal;
      case Stmt::Type::Output: out += to_string(eval(*s.expr, scope), s.expr->pos); return Flow::Normal;
      case Stmt::Type::If: return run(truthy(eval(*s.expr, scope)) ? s.body : s.orelse, scope, out);
      case Stmt::Type::For: return execute_for(s, scope, out);
      case Stmt::Type::Set: execute_set(s, scope); return Flow::Normal;
      case Stmt::Type::Macro: scope.vars[s.text] = macro(s.text, s.params, s.body); return Flow::Normal;
      case Stmt::Type::CallBlock: {
        Scope with_caller{&scope, {}};
        with_caller.vars["caller"] = macro("caller", s.params, s.body);
        out += to_string(eval(*s.expr, with_caller), s.pos);
        return Flow::Normal;
      }
      case Stmt::Type::FilterBlock: {
        std::string text;
        run(s.body, scope, text);
        out += to_string(apply_filter(*s.expr, Value::of(std::move(text)), scope), s.pos);
        return Flow::Normal;
      }
      case Stmt::Type::Break: return Flow::Break;
      case Stmt::Type::Continue: return Flow::Continue;
      case Stmt::Type::Scope: return run(s.body, scope, out);
    }
    return Flow::Normal;
  }

  std::vector<Value> iterate(const Value& v, size_t pos) {
    switch (v.kind) {
      case Kind::List: return *v.list;
      case Kind::Dict: {
        std::vector<Value> keys;
        for (const auto& item : v.dict->items) keys.push_back(Value::of(item.first));
        return keys;
      }
      case Kind::String: {
        std::vector<Value> chars;
        for (char32_t cp : code_points(v.text)) {
          std::string c;
          tok::append_utf8(c, cp);
          chars.push_back(Value::of(std::move(c)));
        }
        return chars;
      }
      case Kind::Undefined: return {};  // Jinja iterates an undefined value as empty
      default: fail_at(pos, "cannot iterate over ", kind_name(v.kind));
    }
  }

  static void bind(Scope& scope, const std::vector<std::string>& names, const Value& item, size_t pos) {
    if (names.size() == 1) {
      scope.vars[names[0]] = item;
      return;
    }
    if (item.kind != Kind::List) fail_at(pos, "cannot unpack ", kind_name(item.kind), " into ", names.size(), " variables");
    if (item.list->size() != names.size()) {
      fail_at(pos, "cannot unpack ", item.list->size(), " values into ", names.size(), " variables");
    }
    for (size_t i = 0; i < names.size(); ++i) scope.vars[names[i]] = (*item.list)[i];
  }

  Flow execute_for(const Stmt& s, Scope& scope, std::string& out) {
    std::vector<Value> items = iterate(eval(*s.expr, scope), s.expr->pos);
    Scope loop_scope{&scope, {}};
    if (s.condition) {
      std::vector<Value> kept;
      for (Value& item : items) {
        bind(loop_scope, s.names, item, s.pos);
        if (truthy(eval(*s.condition, loop_scope))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Dict loop;
      loop.items = {{"index", Value::of(i + 1)},
                    {"index0", Value::of(i)},
                    {"revindex", Value::of(n - i)},
                    {"revindex0", Value::of(n - i - 1)},
                    {"first", Value::of(i == 0)},
                    {"last", Value::of(i == n - 1)},
                    {"length", Value::of(n)},
                    {"previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value{}},
                    {"nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value{}}};
      loop_scope.vars["loop"] = make_dict(std::move(loop));
      bind(loop_scope, s.names, items[static_cast<size_t>(i)], s.pos);
      if (run(s.body, loop_scope, out) == Flow::Break) break;
    }
    if (items.empty()) run(s.orelse, loop_scope, out);
    return Flow::Normal;
  }

  void execute_set(const Stmt& s, Scope& scope) {
    Value value;
    if (s.expr) {
      value = eval(*s.expr, scope);
    } else {
      std::string text;
      run(s.body, scope, text);
      value = Value::of(std::move(text));
    }
    if (!s.text.empty()) {
      const Value* target = scope.find(s.names[0]);
      if (!target || target->kind != Kind::Namespace) {
        fail_at(s.pos, "cannot set '", s.names[0], ".", s.text, "': '", s.names[0], "' is not a namespace()");
      }
      target->dict->set(s.text, std::move(value));
      return;
    }
    bind(scope, s.names, value, s.pos);
  }

  // A macro runs in a scope whose parent is the caller's, as in @huggingface/jinja.
  Value macro(const std::string& name, const std::vector<Param>& params, const Body& body) {
    return Value::of(Callable([this, name, &params, &body](Args& args, Scope& caller, size_t pos) {
      if (macro_depth_ >= kMaxNesting) fail_at(pos, "macro '", name, "' nested more than ", kMaxNesting, " calls deep");
      ++macro_depth_;
      struct Leave {
        int& depth;
        ~Leave() { --depth; }
      } leave{macro_depth_};
      Scope local{&caller, {}};
      if (args.positional.size() > params.size()) {
        fail_at(pos, "macro '", name, "' takes at most ", params.size(), " arguments, got ", args.positional.size());
      }
      for (const auto& keyword : args.keyword) {
        const std::string& key = keyword.first;  // a named variable: clang 14 cannot capture a structured binding
        if (std::none_of(params.begin(), params.end(), [&](const Param& p) { return p.name == key; })) {
          fail_at(pos, "macro '", name, "' has no parameter '", key, "'");
        }
      }
      for (size_t i = 0; i < params.size(); ++i) {
        if (const Value* v = args.get(i, params[i].name)) local.vars[params[i].name] = *v;
        else if (params[i].default_value) local.vars[params[i].name] = eval(*params[i].default_value, local);
        else local.vars[params[i].name] = Value{};
      }
      std::string out;
      run(body, local, out);
      return Value::of(std::move(out));
    }));
  }

  Args evaluate(const CallArgs& call, Scope& scope) {
    Args args;
    for (const ExprPtr& e : call.positional) args.positional.push_back(eval(*e, scope));
    for (const auto& [key, e] : call.keyword) args.keyword.emplace_back(key, eval(*e, scope));
    return args;
  }

  Value eval(const Expr& e, Scope& scope) {
    switch (e.type) {
      case Expr::Type::Literal: return e.literal;
      case Expr::Type::Name: {
        const Value* v = scope.find(e.name);
        return v ? *v : Value{};
      }
      case Expr::Type::List: {
        Items items;
        for (const ExprPtr& item : e.items) items.push_back(eval(*item, scope));
        return Value::of(std::move(items));
      }
      case Expr::Type::Dict: {
        Dict d;
        for (size_t i = 0; i < e.items.size(); i += 2) {
          const Value key = eval(*e.items[i], scope);
          if (key.kind != Kind::String) fail_at(e.items[i]->pos, "dict keys must be strings, got ", kind_name(key.kind));
          d.set(key.text, eval(*e.items[i + 1], scope));
        }
        return make_dict(std::move(d));
      }
      case Expr::Type::Attr: return attribute(eval(*e.items[0], scope), e.name);
      case Expr::Type::Index: return index(eval(*e.items[0], scope), eval(*e.items[1], scope), e.pos);
      case Expr::Type::Slice: return slice(e, scope);
      case Expr::Type::Call: {
        const Value callee = eval(*e.items[0], scope);
        Args args = evaluate(e.args, scope);
        if (callee.kind != Kind::Function) {
          const std::string what = e.items[0]->type == Expr::Type::Name   ? "'" + e.items[0]->name + "'"
                                   : e.items[0]->type == Expr::Type::Attr ? "'" + e.items[0]->name + "'"
                                                                          : "the value";
          if (callee.kind == Kind::Undefined) fail_at(e.pos, what, " is undefined and cannot be called");
          fail_at(e.pos, what, " is ", kind_name(callee.kind), ", not a function");
        }
        return (*callee.function)(args, scope, e.pos);
      }
      case Expr::Type::Filter: return apply_filter(e, eval(*e.items[0], scope), scope);
      case Expr::Type::Test: {
        const Value operand = eval(*e.items[0], scope);
        Args args = evaluate(e.args, scope);
        return Value::of(run_test(e.name, operand, args, e.pos) != e.negate);
      }
      case Expr::Type::Unary: {
        const Value v = eval(*e.items[0], scope);
        if (e.name == "not") return Value::of(!truthy(v));
        if (v.kind == Kind::Int) {
          if (e.name == "-" && v.integer == INT64_MIN) fail_at(e.pos, "integer overflow");
          return Value::of(e.name == "-" ? -v.integer : v.integer);
        }
        if (v.kind == Kind::Float) return Value::of(e.name == "-" ? -v.number : v.number);
        if (v.kind == Kind::Bool) return Value::of(static_cast<int64_t>(e.name == "-" ? -v.boolean : v.boolean));
        fail_at(e.pos, "unary '", e.name, "' needs a number, got ", kind_name(v.kind));
      }
      case Expr::Type::And: {
        Value left = eval(*e.items[0], scope);
        return truthy(left) ? eval(*e.items[1], scope) : left;
      }
      case Expr::Type::Or: {
        Value left = eval(*e.items[0], scope);
        return truthy(left) ? left : eval(*e.items[1], scope);
      }
      case Expr::Type::Binary: return binary(e.name, eval(*e.items[0], scope), eval(*e.items[1], scope), e.pos);
      case Expr::Type::Ternary:
        return truthy(eval(*e.items[0], scope)) ? eval(*e.items[1], scope) : eval(*e.items[2], scope);
      case Expr::Type::Select: return truthy(eval(*e.items[0], scope)) ? eval(*e.items[1], scope) : Value{};
    }
    return Value{};
  }

  Value slice(const Expr& e, Scope& scope) {
    const Value object = eval(*e.items[0], scope);
    std::optional<int64_t> bounds[3];
    for (int k = 0; k < 3; ++k) {
      if (!e.items[static_cast<size_t>(k + 1)]) continue;
      const Value v = eval(*e.items[static_cast<size_t>(k + 1)], scope);
      if (v.kind == Kind::None || v.kind == Kind::Undefined) continue;
      if (v.kind != Kind::Int) fail_at(e.pos, "slice bounds must be integers, got ", kind_name(v.kind));
      bounds[k] = v.integer;
    }
    const int64_t step = bounds[2].value_or(1);
    if (step == 0) fail_at(e.pos, "slice step cannot be zero");
    std::vector<Value> items;
    std::vector<char32_t> cps;
    int64_t n = 0;
    if (object.kind == Kind::List) n = static_cast<int64_t>(object.list->size());
    else if (object.kind == Kind::String) n = static_cast<int64_t>((cps = code_points(object.text)).size());
    else fail_at(e.pos, "cannot slice ", kind_name(object.kind));
    // Python's slice.indices.
    auto clamp = [&](std::optional<int64_t> b, int64_t absent) {
      if (!b) return absent;
      int64_t v = *b < 0 ? *b + n : *b;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], step > 0 ? n : -1);
    if (object.kind == Kind::List) {
      Items out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back((*object.list)[static_cast<size_t>(i)]);
      return Value::of(std::move(out));
    }
    std::vector<char32_t> out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(cps[static_cast<size_t>(i)]);
    return Value::of(from_code_points(out));
  }

  static Value index(const Value& object, const Value& key, size_t pos) {
    if (object.kind == Kind::Dict || object.kind == Kind::Namespace) {
      if (key.kind != Kind::String) return Value{};
      return attribute(object, key.text);
    }
    if (object.kind == Kind::List || object.kind == Kind::String) {
      if (key.kind == Kind::String) return attribute(object, key.text);
      if (key.kind != Kind::Int) fail_at(pos, kind_name(object.kind), " index must be an integer, got ", kind_name(key.kind));
      if (object.kind == Kind::List) {
        const auto n = static_cast<int64_t>(object.list->size());
        const int64_t i = key.integer < 0 ? key.integer + n : key.integer;
        return i >= 0 && i < n ? (*object.list)[static_cast<size_t>(i)] : Value{};
      }
      const std::vector<char32_t> cps = code_points(object.text);
      const auto n = static_cast<int64_t>(cps.size());
      const int64_t i = key.integer < 0 ? key.integer + n : key.integer;
      if (i < 0 || i >= n) return Value{};
      std::string c;
      tok::append_utf8(c, cps[static_cast<size_t>(i)]);
      return Value::of(std::move(c));
    }
    return Value{};  // an index of undefined or none is undefined, as in @huggingface/jinja
  }

  // obj.name: a key of a dict, else a method of the value, else undefined.
  static Value attribute(const Value& object, const std::string& name) {
    if (object.kind == Kind::Dict || object.kind == Kind::Namespace) {
      if (const Value* v = object.dict->find(name)) return *v;
      if (object.kind == Kind::Namespace) return Value{};
    }
    return method(object, name);
  }

  static Value method(const Value& self, const std::string& name);

  static Value binary(const std::string& op, const Value& a, const Value& b, size_t pos);

  Value apply_filter(const Expr& filter, const Value& operand, Scope& scope);
  int macro_depth_ = 0;
  Value filter(const std::string& name, const Value& operand, Args& args, Scope& scope, size_t pos);
  static bool run_test(const std::string& name, const Value& v, const Args& args, size_t pos);
};

// ---- operators

int compare(const Value& a, const Value& b, size_t pos) {
  if ((a.is_number() || a.kind == Kind::Bool) && (b.is_number() || b.kind == Kind::Bool)) {
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.kind == Kind::String && b.kind == Kind::String) return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  fail_at(pos, "cannot compare ", kind_name(a.kind), " with ", kind_name(b.kind));
}

bool contains(const Value& container, const Value& item, size_t pos) {
  switch (container.kind) {
    case Kind::Undefined: return false;
    case Kind::String:
      if (item.kind != Kind::String) fail_at(pos, "'in <string>' needs a string on the left, got ", kind_name(item.kind));
      return container.text.find(item.text) != std::string::npos;
    case Kind::List:
      return std::any_of(container.list->begin(), container.list->end(), [&](const Value& v) { return equal(v, item); });
    case Kind::Dict:
    case Kind::Namespace: return item.kind == Kind::String && container.dict->find(item.text) != nullptr;
    default: fail_at(pos, "'in' needs a string, list or dict on the right, got ", kind_name(container.kind));
  }
}

Value Interpreter::binary(const std::string& op, const Value& a, const Value& b, size_t pos) {
  if (op == "==") return Value::of(equal(a, b));
  if (op == "!=") return Value::of(!equal(a, b));
  if (op == "in") return Value::of(contains(b, a, pos));
  if (op == "not in") return Value::of(!contains(b, a, pos));
  if (op == "~") return Value::of(to_string(a, pos) + to_string(b, pos));
  if (op == "<") return Value::of(compare(a, b, pos) < 0);
  if (op == "<=") return Value::of(compare(a, b, pos) <= 0);
  if (op == ">") return Value::of(compare(a, b, pos) > 0);
  if (op == ">=") return Value::of(compare(a, b, pos) >= 0);
  if (a.kind == Kind::Undefined || b.kind == Kind::Undefined) {
    fail_at(pos, "'", op, "' on an undefined value");
  }
  if (op == "+") {
    if (a.kind == Kind::List && b.kind == Kind::List) {
      Items items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return Value::of(std::move(items));
    }
    // @huggingface/jinja joins a string with anything; Python would fail. The
    // lenient choice never turns a working template into an error.
    if (a.kind == Kind::String || b.kind == Kind::String) return Value::of(to_string(a, pos) + to_string(b, pos));
  }
  if (op == "*" && ((a.kind == Kind::String && b.kind == Kind::Int) || (a.kind == Kind::Int && b.kind == Kind::String))) {
    const Value& s = a.kind == Kind::String ? a : b;
    std::string out;
    for (int64_t i = 0; i < (a.kind == Kind::Int ? a.integer : b.integer); ++i) out += s.text;
    return Value::of(std::move(out));
  }
  const bool numbers = (a.is_number() || a.kind == Kind::Bool) && (b.is_number() || b.kind == Kind::Bool);
  if (!numbers) fail_at(pos, "'", op, "' between ", kind_name(a.kind), " and ", kind_name(b.kind));
  const bool integers = a.kind != Kind::Float && b.kind != Kind::Float;
  const double x = a.as_double(), y = b.as_double();
  const int64_t i = a.kind == Kind::Int ? a.integer : static_cast<int64_t>(a.boolean);
  const int64_t j = b.kind == Kind::Int ? b.integer : static_cast<int64_t>(b.boolean);
  // Integers are 64-bit here (Python's are unbounded): overflow is an error, never a wrapped value.
  int64_t r = 0;
  auto checked = [&](bool (*operation)(int64_t, int64_t, int64_t*)) {
    if (operation(i, j, &r)) fail_at(pos, "integer overflow");
    return Value::of(r);
  };
  if (op == "+") return integers ? checked([](int64_t p, int64_t q, int64_t* o) { return __builtin_add_overflow(p, q, o); }) : Value::of(x + y);
  if (op == "-") return integers ? checked([](int64_t p, int64_t q, int64_t* o) { return __builtin_sub_overflow(p, q, o); }) : Value::of(x - y);
  if (op == "*") return integers ? checked([](int64_t p, int64_t q, int64_t* o) { return __builtin_mul_overflow(p, q, o); }) : Value::of(x * y);
  if (op == "**") {
    if (!integers || j < 0) return Value::of(std::pow(x, y));
    r = 1;
    for (int64_t base = i, e = j; e > 0; e >>= 1) {  // by squaring: at most 64 rounds
      if ((e & 1) && __builtin_mul_overflow(r, base, &r)) fail_at(pos, "integer overflow");
      if (e > 1 && __builtin_mul_overflow(base, base, &base)) fail_at(pos, "integer overflow");
    }
    return Value::of(r);
  }
  if (y == 0) fail_at(pos, "division by zero");
  if (op == "/") return Value::of(x / y);
  if (integers && i == INT64_MIN && j == -1) fail_at(pos, "integer overflow");
  // // and % round toward negative infinity, as in Python.
  if (op == "//") {
    if (!integers) return Value::of(std::floor(x / y));
    const int64_t q = i / j;
    return Value::of(q - ((i % j != 0 && (i < 0) != (j < 0)) ? 1 : 0));
  }
  if (!integers) return Value::of(x - y * std::floor(x / y));
  const int64_t m = i % j;
  return Value::of(m != 0 && (m < 0) != (j < 0) ? m + j : m);
}

// ---- methods of strings and dicts

std::optional<std::string> optional_string(const Args& args, size_t index, std::string_view name, size_t pos) {
  const Value* v = args.get(index, name);
  if (!v || v->kind == Kind::None) return std::nullopt;
  if (v->kind != Kind::String) fail_at(pos, "argument '", name, "' must be a string, got ", kind_name(v->kind));
  return v->text;
}

const Value& required(const Args& args, size_t index, std::string_view name, std::string_view function, size_t pos) {
  const Value* v = args.get(index, name);
  if (!v) fail_at(pos, function, "() needs the argument '", name, "'");
  return *v;
}

std::string required_string(const Args& args, size_t index, std::string_view name, std::string_view function, size_t pos) {
  const Value& v = required(args, index, name, function, pos);
  if (v.kind != Kind::String) fail_at(pos, function, "(): '", name, "' must be a string, got ", kind_name(v.kind));
  return v.text;
}

int64_t optional_int(const Args& args, size_t index, std::string_view name, int64_t absent, size_t pos) {
  const Value* v = args.get(index, name);
  if (!v || v->kind == Kind::None) return absent;
  if (v->kind != Kind::Int) fail_at(pos, "argument '", name, "' must be an integer, got ", kind_name(v->kind));
  return v->integer;
}

bool optional_bool(const Args& args, size_t index, std::string_view name, bool absent) {
  const Value* v = args.get(index, name);
  return v ? truthy(*v) : absent;
}

// str.startswith / endswith take one string or a tuple of them.
bool affix_match(const std::string& s, const Value& affix, bool prefix, size_t pos) {
  auto one = [&](const Value& a) {
    if (a.kind != Kind::String) fail_at(pos, prefix ? "startswith" : "endswith", "() needs strings, got ", kind_name(a.kind));
    return prefix ? s.starts_with(a.text) : s.ends_with(a.text);
  };
  if (affix.kind == Kind::List) return std::any_of(affix.list->begin(), affix.list->end(), one);
  return one(affix);
}

Value Interpreter::method(const Value& self, const std::string& name) {
  auto bound = [](auto body) { return Value::of(Callable(body)); };
  if (self.kind == Kind::String) {
    const std::string s = self.text;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return bound([s, name](Args& args, Scope&, size_t pos) {
        return Value::of(strip(s, optional_string(args, 0, "chars", pos), name != "rstrip", name != "lstrip"));
      });
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      const Case mode = name == "upper" ? Case::Upper : name == "lower" ? Case::Lower : name == "title" ? Case::Title : Case::Capitalize;
      return bound([s, mode](Args&, Scope&, size_t) { return Value::of(change_case(s, mode)); });
    }
    if (name == "split") {
      return bound([s](Args& args, Scope&, size_t pos) {
        const auto separator = optional_string(args, 0, "sep", pos);
        if (separator && separator->empty()) fail_at(pos, "split(): empty separator");
        Items parts;
        for (std::string& part : split(s, separator, optional_int(args, 1, "maxsplit", -1, pos))) {
          parts.push_back(Value::of(std::move(part)));
        }
        return Value::of(std::move(parts));
      });
    }
    if (name == "startswith" || name == "endswith") {
      return bound([s, prefix = name == "startswith"](Args& args, Scope&, size_t pos) {
        return Value::of(affix_match(s, required(args, 0, prefix ? "prefix" : "suffix", prefix ? "startswith" : "endswith", pos), prefix, pos));
      });
    }
    if (name == "replace") {
      return bound([s](Args& args, Scope&, size_t pos) {
        return Value::of(replace_all(s, required_string(args, 0, "old", "replace", pos), required_string(args, 1, "new", "replace", pos),
                                     optional_int(args, 2, "count", -1, pos)));
      });
    }
    if (name == "find") {
      return bound([s](Args& args, Scope&, size_t pos) {
        const size_t at = s.find(required_string(args, 0, "sub", "find", pos));
        return Value::of(at == std::string::npos ? int64_t{-1} : count_code_points(std::string_view(s).substr(0, at)));
      });
    }
    if (name == "count") {
      return bound([s](Args& args, Scope&, size_t pos) {
        const std::string sub = required_string(args, 0, "sub", "count", pos);
        if (sub.empty()) return Value::of(count_code_points(s) + 1);
        int64_t n = 0;
        for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
        return Value::of(n);
      });
    }
  }
  if (self.kind == Kind::Dict) {
    const std::shared_ptr<Dict> d = self.dict;
    if (name == "items" || name == "keys" || name == "values") {
      return bound([d, name](Args&, Scope&, size_t) {
        Items out;
        for (const auto& [k, v] : d->items) {
          if (name == "items") out.push_back(Value::of(Items{Value::of(k), v}));
          else out.push_back(name == "keys" ? Value::of(k) : v);
        }
        return Value::of(std::move(out));
      });
    }
    if (name == "get") {
      return bound([d](Args& args, Scope&, size_t pos) {
        const std::string key = required_string(args, 0, "key", "get", pos);
        if (const Value* v = d->find(key)) return *v;
        const Value* fallback = args.get(1, "default");
        return fallback ? *fallback : Value::none();
      });
    }
  }
  return Value{};
}

// ---- tests

bool Interpreter::run_test(const std::string& name, const Value& v, const Args& args, size_t pos) {
  auto argument = [&]() -> const Value& { return required(args, 0, "value", name, pos); };
  if (name == "defined") return v.kind != Kind::Undefined;
  if (name == "undefined") return v.kind == Kind::Undefined;
  if (name == "none") return v.kind == Kind::None;
  if (name == "string") return v.kind == Kind::String;
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::Int;
  if (name == "float") return v.kind == Kind::Float;
  if (name == "boolean") return v.kind == Kind::Bool;
  if (name == "true") return v.kind == Kind::Bool && v.boolean;
  if (name == "false") return v.kind == Kind::Bool && !v.boolean;
  if (name == "mapping") return v.kind == Kind::Dict;
  if (name == "iterable") return v.kind == Kind::List || v.kind == Kind::String || v.kind == Kind::Dict;
  if (name == "sequence") return v.kind == Kind::List || v.kind == Kind::String || v.kind == Kind::Dict;
  if (name == "callable") return v.kind == Kind::Function;
  if (name == "lower" || name == "upper") {
    return v.kind == Kind::String && change_case(v.text, name == "lower" ? Case::Lower : Case::Upper) == v.text;
  }
  if (name == "odd" || name == "even") {
    if (v.kind != Kind::Int) fail_at(pos, "test '", name, "' needs an integer, got ", kind_name(v.kind));
    return (v.integer % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const Value& d = argument();
    if (v.kind != Kind::Int || d.kind != Kind::Int || d.integer == 0) fail_at(pos, "test 'divisibleby' needs non-zero integers");
    return v.integer % d.integer == 0;
  }
  if (name == "equalto" || name == "eq" || name == "==") return equal(v, argument());
  if (name == "ne" || name == "!=") return !equal(v, argument());
  if (name == "in") return contains(argument(), v, pos);
  if (name == "gt") return compare(v, argument(), pos) > 0;
  if (name == "ge") return compare(v, argument(), pos) >= 0;
  if (name == "lt") return compare(v, argument(), pos) < 0;
  if (name == "le") return compare(v, argument(), pos) <= 0;
  fail_at(pos, "unknown test '", name, "'");
}

// ---- filters

Value Interpreter::apply_filter(const Expr& f, const Value& operand, Scope& scope) {
  Args args = evaluate(f.args, scope);
  return filter(f.name, operand, args, scope, f.pos);
}

// int(x) of a float: toward zero, and only where an int64 holds it.
int64_t truncate(double d, size_t pos) {
  if (!(std::fabs(d) < 9.2e18)) fail_at(pos, "cannot convert ", float_repr(d), " to an integer");
  return static_cast<int64_t>(d);
}

// item.a.b for map/selectattr/sort(attribute=...): dotted keys, and list indices.
Value attribute_path(const Value& item, const std::string& path) {
  Value v = item;
  for (const std::string& part : split(path, std::string("."), -1)) {
    int64_t index = 0;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), index);
    if (v.kind == Kind::List && ec == std::errc() && end == part.data() + part.size()) {
      v = index >= 0 && index < static_cast<int64_t>(v.list->size()) ? (*v.list)[static_cast<size_t>(index)] : Value{};
    } else if (v.kind == Kind::Dict || v.kind == Kind::Namespace) {
      const Value* next = v.dict->find(part);
      v = next ? *next : Value{};
    } else {
      return Value{};
    }
  }
  return v;
}

Value Interpreter::filter(const std::string& name, const Value& v, Args& args, Scope& scope, size_t pos) {
  auto needs = [&](std::initializer_list<Kind> kinds) {
    if (std::find(kinds.begin(), kinds.end(), v.kind) == kinds.end()) {
      fail_at(pos, "filter '", name, "' cannot be applied to ", kind_name(v.kind));
    }
  };
  auto sequence = [&]() -> std::vector<Value> {
    needs({Kind::List, Kind::String, Kind::Dict});
    return iterate(v, pos);
  };
  if (name == "safe") return v;
  if (name == "default" || name == "d") {
    const bool boolean = optional_bool(args, 1, "boolean", false);
    if (v.kind == Kind::Undefined || (boolean && !truthy(v))) {
      const Value* fallback = args.get(0, "default_value");
      return fallback ? *fallback : Value::of(std::string());
    }
    return v;
  }
  if (name == "tojson") {
    JsonStyle style;
    const Value* indent = args.get(0, "indent");
    if (indent && indent->kind == Kind::Int) {
      style.indent = static_cast<int>(indent->integer);
      style.item_separator = ",";
    } else if (indent && indent->kind != Kind::None) {
      fail_at(pos, "tojson: indent must be an integer");
    }
    style.ensure_ascii = optional_bool(args, 99, "ensure_ascii", false);
    style.sort_keys = optional_bool(args, 99, "sort_keys", false);
    if (const Value* separators = args.get(99, "separators"); separators && separators->kind != Kind::None) {
      if (separators->kind != Kind::List || separators->list->size() != 2 || (*separators->list)[0].kind != Kind::String ||
          (*separators->list)[1].kind != Kind::String) {
        fail_at(pos, "tojson: separators must be two strings");
      }
      style.item_separator = (*separators->list)[0].text;
      style.key_separator = (*separators->list)[1].text;
    }
    std::string out;
    append_json(out, v, style, 0, pos);
    return Value::of(std::move(out));
  }
  if (name == "string") return Value::of(to_string(v, pos));
  if (name == "bool") return Value::of(truthy(v));
  if (name == "length" || name == "count") {
    if (v.kind == Kind::String) return Value::of(count_code_points(v.text));
    needs({Kind::List, Kind::Dict, Kind::Namespace});
    return Value::of(static_cast<int64_t>(v.kind == Kind::List ? v.list->size() : v.dict->items.size()));
  }
  if (name == "trim") {
    needs({Kind::String});
    return Value::of(strip(v.text, optional_string(args, 0, "chars", pos), true, true));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    needs({Kind::String});
    return Value::of(change_case(v.text, name == "upper" ? Case::Upper : name == "lower" ? Case::Lower : name == "title" ? Case::Title : Case::Capitalize));
  }
  if (name == "replace") {
    needs({Kind::String});
    return Value::of(replace_all(v.text, required_string(args, 0, "old", "replace", pos), required_string(args, 1, "new", "replace", pos),
                                 optional_int(args, 2, "count", -1, pos)));
  }
  if (name == "wordcount") {
    needs({Kind::String});
    return Value::of(static_cast<int64_t>(split(v.text, std::nullopt, -1).size()));
  }
  if (name == "indent") {
    needs({Kind::String});
    const Value* width = args.get(0, "width");
    std::string prefix(4, ' ');
    if (width && width->kind == Kind::Int) prefix = std::string(static_cast<size_t>(std::max<int64_t>(0, width->integer)), ' ');
    else if (width && width->kind == Kind::String) prefix = width->text;
    const bool first = optional_bool(args, 1, "first", false), blank = optional_bool(args, 2, "blank", false);
    std::string out;
    const std::vector<std::string> lines = split(v.text, std::string("\n"), -1);
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) out += '\n';
      if ((i > 0 || first) && (blank || !lines[i].empty())) out += prefix;
      out += lines[i];
    }
    return Value::of(std::move(out));
  }
  if (name == "int" || name == "float") {
    const Value* fallback = args.get(0, "default");
    const Value otherwise = fallback ? *fallback : name == "int" ? Value::of(int64_t{0}) : Value::of(0.0);
    if (v.kind == Kind::Int || v.kind == Kind::Bool) {
      return name == "int" ? Value::of(v.kind == Kind::Int ? v.integer : int64_t{v.boolean}) : Value::of(v.as_double());
    }
    if (v.kind == Kind::Float) return name == "int" ? Value::of(truncate(v.number, pos)) : v;
    if (v.kind != Kind::String) return otherwise;
    const std::string text(tok::trim_whitespace(v.text, true, true));
    if (name == "int") {
      int64_t i = 0;
      const auto [end, ec] = std::from_chars(text.data() + (text.starts_with('+') ? 1 : 0), text.data() + text.size(), i);
      if (ec == std::errc() && end == text.data() + text.size()) return Value::of(i);
    }
    double d = 0;
    const auto [end, ec] = std::from_chars(text.data() + (text.starts_with('+') ? 1 : 0), text.data() + text.size(), d);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return otherwise;
    return name == "int" ? Value::of(truncate(d, pos)) : Value::of(d);
  }
  if (name == "abs") {
    needs({Kind::Int, Kind::Float});
    return v.kind == Kind::Int ? Value::of(v.integer < 0 ? -v.integer : v.integer) : Value::of(std::fabs(v.number));
  }
  if (name == "round") {
    needs({Kind::Int, Kind::Float});
    const int64_t precision = optional_int(args, 0, "precision", 0, pos);
    const std::string method = optional_string(args, 1, "method", pos).value_or("common");
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = v.as_double() * scale;
    double r = 0;
    if (method == "common") r = std::round(x);
    else if (method == "floor") r = std::floor(x);
    else if (method == "ceil") r = std::ceil(x);
    else fail_at(pos, "round: method must be common, floor or ceil");
    return Value::of(r / scale);
  }
  if (name == "items" || name == "dictsort") {
    needs({Kind::Dict, Kind::Namespace});
    Items out;
    for (const auto& [k, item] : v.dict->items) out.push_back(Value::of(Items{Value::of(k), item}));
    if (name == "dictsort") {
      std::stable_sort(out.begin(), out.end(), [](const Value& a, const Value& b) { return (*a.list)[0].text < (*b.list)[0].text; });
    }
    return Value::of(std::move(out));
  }
  if (name == "list") return Value::of(sequence());
  if (name == "first" || name == "last") {
    const std::vector<Value> items = sequence();
    if (items.empty()) return Value{};
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    std::vector<Value> items = sequence();
    std::reverse(items.begin(), items.end());
    if (v.kind != Kind::String) return Value::of(std::move(items));
    std::string out;
    for (const Value& c : items) out += c.text;
    return Value::of(std::move(out));
  }
  if (name == "join") {
    const std::string separator = optional_string(args, 0, "d", pos).value_or("");
    const std::optional<std::string> attribute = optional_string(args, 1, "attribute", pos);
    std::string out;
    const std::vector<Value> items = sequence();
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += separator;
      out += to_string(attribute ? attribute_path(items[i], *attribute) : items[i], pos);
    }
    return Value::of(std::move(out));
  }
  if (name == "unique") {
    Items out;
    for (const Value& item : sequence()) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& seen) { return equal(seen, item); })) out.push_back(item);
    }
    return Value::of(std::move(out));
  }
  if (name == "sort" || name == "min" || name == "max") {
    std::vector<Value> items = sequence();
    const bool reverse = name == "sort" && optional_bool(args, 0, "reverse", false);
    const bool case_sensitive = optional_bool(args, name == "sort" ? 1 : 0, "case_sensitive", false);
    const std::optional<std::string> attribute = optional_string(args, name == "sort" ? 2 : 1, "attribute", pos);
    auto key = [&](const Value& item) {
      Value k = attribute ? attribute_path(item, *attribute) : item;
      if (!case_sensitive && k.kind == Kind::String) k.text = change_case(k.text, Case::Lower);
      return k;
    };
    auto less = [&](const Value& a, const Value& b) { return compare(key(a), key(b), pos) < 0; };
    if (name == "sort") {
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) { return reverse ? less(b, a) : less(a, b); });
      return Value::of(std::move(items));
    }
    if (items.empty()) return Value{};
    return name == "min" ? *std::min_element(items.begin(), items.end(), less) : *std::max_element(items.begin(), items.end(), less);
  }
  if (name == "map") {
    Items out;
    const std::vector<Value> items = sequence();
    if (const auto attribute = optional_string(args, 99, "attribute", pos)) {
      const Value* fallback = args.get(99, "default");
      for (const Value& item : items) {
        Value mapped = attribute_path(item, *attribute);
        out.push_back(mapped.kind == Kind::Undefined && fallback ? *fallback : mapped);
      }
      return Value::of(std::move(out));
    }
    // map('filter', args...): each item through another filter.
    const std::string inner = required_string(args, 0, "filter", "map", pos);
    if (!filter_names().contains(inner)) fail_at(pos, "unknown filter '", inner, "'");
    Args rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keyword = args.keyword;
    for (const Value& item : items) out.push_back(filter(inner, item, rest, scope, pos));
    return Value::of(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attribute = name.ends_with("attr");
    const bool keep_matches = name.starts_with("select");
    const std::string attribute = by_attribute ? required_string(args, 0, "attribute", name, pos) : "";
    const size_t test_at = by_attribute ? 1 : 0;
    const std::optional<std::string> test = optional_string(args, test_at, "test", pos);
    if (test && !test_names().contains(*test)) fail_at(pos, "unknown test '", *test, "'");
    Args test_args;
    if (args.positional.size() > test_at + 1) {
      test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(test_at + 1), args.positional.end());
    }
    Items out;
    for (const Value& item : sequence()) {
      const Value subject = by_attribute ? attribute_path(item, attribute) : item;
      const bool match = test ? run_test(*test, subject, test_args, pos) : truthy(subject);
      if (match == keep_matches) out.push_back(item);
    }
    return Value::of(std::move(out));
  }
  fail_at(pos, "unknown filter '", name, "'");
}

// ---- globals

std::string strftime_now(const std::string& format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string out(256, '\0');
  const size_t n = std::strftime(out.data(), out.size(), format.c_str(), &local);
  out.resize(n);
  return out;
}

void add_globals(Scope& globals) {
  globals.vars["raise_exception"] = Value::of(Callable([](Args& args, Scope&, size_t pos) -> Value {
    fail_at(pos, args.positional.empty() ? std::string("raise_exception() called") : to_string(args.positional[0], pos));
  }));
  globals.vars["strftime_now"] = Value::of(Callable([](Args& args, Scope&, size_t pos) {
    return Value::of(strftime_now(required_string(args, 0, "format", "strftime_now", pos)));
  }));
  globals.vars["range"] = Value::of(Callable([](Args& args, Scope&, size_t pos) {
    auto number = [&](size_t i) {
      if (args.positional[i].kind != Kind::Int) fail_at(pos, "range() needs integers");
      return args.positional[i].integer;
    };
    if (args.positional.empty() || args.positional.size() > 3) fail_at(pos, "range() takes 1 to 3 integers");
    const int64_t start = args.positional.size() > 1 ? number(0) : 0;
    const int64_t stop = args.positional.size() > 1 ? number(1) : number(0);
    const int64_t step = args.positional.size() > 2 ? number(2) : 1;
    if (step == 0) fail_at(pos, "range() step cannot be zero");
    // Jinja's sandbox limit: a template cannot ask for unbounded memory.
    constexpr int64_t kMaxRange = 100000;
    if ((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step) > kMaxRange) fail_at(pos, "range() of more than ", kMaxRange, " items");
    Items out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::of(i));
    return Value::of(std::move(out));
  }));
  globals.vars["namespace"] = Value::of(Callable([](Args& args, Scope&, size_t pos) {
    Dict d;
    if (!args.positional.empty()) {
      const Value& init = args.positional[0];
      if (args.positional.size() > 1 || init.kind != Kind::Dict) fail_at(pos, "namespace() takes one dict and keyword arguments");
      d = *init.dict;
    }
    for (auto& [key, value] : args.keyword) d.set(key, value);
    return make_dict(std::move(d), Kind::Namespace);
  }));
  globals.vars["dict"] = Value::of(Callable([](Args& args, Scope&, size_t) {
    Dict d;
    for (auto& [key, value] : args.keyword) d.set(key, value);
    return make_dict(std::move(d));
  }));
}

}  // namespace

// ---------------------------------------------------------------- ChatTemplate

struct ChatTemplate::Program {
  std::string source;
  Body body;
};

ChatTemplate::ChatTemplate(std::string_view source, std::string origin) : origin_(std::move(origin)) {
  auto program = std::make_unique<Program>();
  program->source = tok::sanitize_utf8(source);
  // As Jinja (keep_trailing_newline=False): one newline at the very end is not output.
  if (program->source.ends_with('\n')) program->source.pop_back();
  try {
    program->body = Parser(Lexer(program->source).run()).program();
  } catch (const TemplateError& e) {
    fail(origin_, ":", location(program->source, e.pos), ": ", e.message);
  }
  program_ = std::move(program);
}

ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

std::string ChatTemplate::render(const ChatJson& context) const {
  if (!context.is_object()) fail(origin_, ": the render context must be a JSON object");
  Scope globals;
  add_globals(globals);
  for (auto it = context.begin(); it != context.end(); ++it) globals.vars[it.key()] = from_json(it.value());
  std::string out;
  try {
    Interpreter().run(program_->body, globals, out);
  } catch (const TemplateError& e) {
    fail(origin_, ":", location(program_->source, e.pos), ": ", e.message);
  }
  return out;
}

ChatJson chat_template_context(const Tokenizer& tokenizer, const ChatJson& messages, bool add_generation_prompt) {
  ChatJson context = ChatJson::object();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  for (const char* name : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (const auto token = tokenizer.special_token(name)) context[name] = *token;
  }
  return context;
}

}  // namespace slm
