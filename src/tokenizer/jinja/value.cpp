#include "tokenizer/jinja/value.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/strings.h"
#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace slm::jinja {

Value make_dict(Dict d, Kind kind) {
  Value v{kind};
  v.dict = std::make_shared<Dict>(std::move(d));
  for (const auto& item : v.dict->items) v.depth = std::max(v.depth, item.second.depth);
  ++v.depth;
  return v;
}

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
    case Kind::String: return !v.text().empty();
    case Kind::List: return !v.list->empty();
    case Kind::Dict: return !v.dict->items.empty();
    case Kind::Namespace:
    case Kind::Function: return true;
  }
  return false;
}

int64_t weight(const Value& v) {
  switch (v.kind) {
    case Kind::String: return 1 + static_cast<int64_t>(v.text().size() / 8);
    case Kind::List: return 1 + static_cast<int64_t>(v.list->size());
    case Kind::Dict:
    case Kind::Namespace: return 1 + static_cast<int64_t>(v.dict->items.size());
    default: return 1;
  }
}

Value from_json(const ChatJson& j, int depth) {
  if (j.is_structured() && depth >= kMaxNesting) fail_at(kNoPosition, "nested more than ", kMaxNesting, " arrays and objects deep");
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
      for (const ChatJson& item : j) items.push_back(from_json(item, depth + 1));
      return Value::of(std::move(items));
    }
    case ChatJson::value_t::object: {
      Dict d;
      d.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.items.emplace_back(it.key(), from_json(it.value(), depth + 1));
      return make_dict(std::move(d));
    }
    default: return Value{};
  }
}

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
    if (digits.size() > 1) out.append(".").append(digits, 1);
    char exp[16];
    std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  if (exponent < 0) return out + "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  const size_t point = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= point) return out + digits + std::string(point - digits.size(), '0') + ".0";
  return out + digits.substr(0, point) + "." + digits.substr(point);
}

namespace {

// The lists and dicts a recursive printer is inside, outermost first. A
// namespace can hold itself (`{% set ns.me = ns %}`), and assignments to
// namespaces in a loop can build values deeper than the parser lets a
// literal be; the printers stop at kMaxNesting.
class Enclosing {
 public:
  explicit Enclosing(size_t pos) : pos_(pos) {}
  bool holds(const void* container) const { return std::find(open_.begin(), open_.end(), container) != open_.end(); }
  void enter(const void* container) {
    if (open_.size() >= static_cast<size_t>(kMaxNesting)) {
      fail_at(pos_, "cannot print a value nested more than ", kMaxNesting, " lists and dicts deep");
    }
    open_.push_back(container);
  }
  void leave() { open_.pop_back(); }
  size_t depth() const { return open_.size(); }

 private:
  size_t pos_;
  std::vector<const void*> open_;
};

void write_json(std::string& out, const Value& v, const JsonStyle& style, Enclosing& enclosing, size_t pos) {
  auto newline = [&](size_t level) {
    check_text(out.size() + (style.indent < 0 ? 0 : 1 + static_cast<size_t>(style.indent) * level), pos);
    if (style.indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(style.indent) * level, ' ');
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
    case Kind::String: tok::append_json_string(out, v.text(), style.ensure_ascii); return;
    case Kind::List: {
      if (enclosing.holds(v.list.get())) fail_at(pos, "tojson: the value holds itself (a circular reference)");
      enclosing.enter(v.list.get());
      const size_t depth = enclosing.depth();
      out += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth);
        write_json(out, (*v.list)[i], style, enclosing, pos);
      }
      if (!v.list->empty()) newline(depth - 1);
      out += ']';
      enclosing.leave();
      return;
    }
    case Kind::Dict:
    case Kind::Namespace: {
      if (enclosing.holds(v.dict.get())) fail_at(pos, "tojson: the value holds itself (a circular reference)");
      enclosing.enter(v.dict.get());
      const size_t depth = enclosing.depth();
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.dict->items) items.push_back(&item);
      if (style.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth);
        tok::append_json_string(out, items[i]->first, style.ensure_ascii);
        out += style.key_separator;
        write_json(out, items[i]->second, style, enclosing, pos);
      }
      if (!items.empty()) newline(depth - 1);
      out += '}';
      enclosing.leave();
      return;
    }
    case Kind::Function: fail_at(pos, "a function cannot be written as JSON");
  }
}

}  // namespace

void append_json(std::string& out, const Value& v, const JsonStyle& style, size_t pos) {
  Enclosing enclosing(pos);
  write_json(out, v, style, enclosing, pos);
}

namespace {

// str.isprintable() of one code point: false for the categories Python
// escapes in a repr (controls, format characters, separators other than the
// space, surrogates, private use, unassigned).
bool printable(char32_t cp) {
  if (cp >= 0x20 && cp < 0x7F) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: return false;
    default: return true;
  }
}

// Python's repr of a str: single quotes unless the text holds one and no
// double quote; backslash escapes for the quote, \\, \t, \n, \r and every
// character that is not printable.
std::string string_repr(const std::string& text) {
  const bool double_quoted = text.find('\'') != std::string::npos && text.find('"') == std::string::npos;
  const char quote = double_quoted ? '"' : '\'';
  std::string out(1, quote);
  out.reserve(text.size() + 2);
  for (size_t i = 0; i < text.size();) {
    const char32_t cp = tok::next_code_point(text, i);
    char escape[16];
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (printable(cp)) {
      tok::append_utf8(out, cp);
    } else {
      const auto u = static_cast<unsigned>(cp);
      std::snprintf(escape, sizeof escape, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", u);
      out += escape;
    }
  }
  return out + quote;
}

// Python's repr, which prints a list or dict met again inside itself as
// [...] or {...} (a tuple is not checked: a cycle through one passes a dict).
std::string write_repr(const Value& v, Enclosing& enclosing, size_t pos) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::String: return string_repr(v.text());
    case Kind::List: {
      if (!v.tuple && enclosing.holds(v.list.get())) return "[...]";
      enclosing.enter(v.list.get());
      std::string out(1, v.tuple ? '(' : '[');
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += ", ";
        out += write_repr((*v.list)[i], enclosing, pos);
        check_text(out.size(), pos);
      }
      if (v.tuple && v.list->size() == 1) out += ',';
      enclosing.leave();
      return out + (v.tuple ? ')' : ']');
    }
    case Kind::Dict:
    case Kind::Namespace: {
      const bool named = v.kind == Kind::Namespace;
      if (enclosing.holds(v.dict.get())) return named ? "<Namespace {...}>" : "{...}";
      enclosing.enter(v.dict.get());
      std::string out = named ? "<Namespace {" : "{";
      for (size_t i = 0; i < v.dict->items.size(); ++i) {
        if (i) out += ", ";
        out += string_repr(v.dict->items[i].first) + ": " + write_repr(v.dict->items[i].second, enclosing, pos);
        check_text(out.size(), pos);
      }
      enclosing.leave();
      return out + (named ? "}>" : "}");
    }
    default: return to_string(v, pos);
  }
}

}  // namespace

std::string repr(const Value& v, size_t pos) {
  Enclosing enclosing(pos);
  return write_repr(v, enclosing, pos);
}

std::string to_string(const Value& v, size_t pos) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.boolean ? "True" : "False";
    case Kind::Int: return std::to_string(v.integer);
    case Kind::Float: return float_repr(v.number);
    case Kind::String: return v.text();
    case Kind::Function: return "<function>";
    default: return repr(v, pos);
  }
}

bool equal(const Value& a, const Value& b) {
  spend(1, kNoPosition);
  if ((a.is_number() || a.kind == Kind::Bool) && (b.is_number() || b.kind == Kind::Bool)) {
    if (a.kind == Kind::Int && b.kind == Kind::Int) return a.integer == b.integer;
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.text() == b.text();
    case Kind::List:
      if (a.list == b.list) return true;  // as Python compares a list with itself
      return a.list->size() == b.list->size() &&
             std::equal(a.list->begin(), a.list->end(), b.list->begin(), [](const Value& x, const Value& y) { return equal(x, y); });
    case Kind::Dict: {
      if (a.dict == b.dict) return true;
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

int compare(const Value& a, const Value& b, size_t pos) {
  if ((a.is_number() || a.kind == Kind::Bool) && (b.is_number() || b.kind == Kind::Bool)) {
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.kind == Kind::String && b.kind == Kind::String) return a.text() < b.text() ? -1 : a.text() > b.text() ? 1 : 0;
  fail_at(pos, "cannot compare ", kind_name(a.kind), " with ", kind_name(b.kind));
}

bool contains(const Value& container, const Value& item, size_t pos) {
  switch (container.kind) {
    case Kind::Undefined: return false;
    case Kind::String:
      if (item.kind != Kind::String) fail_at(pos, "'in <string>' needs a string on the left, got ", kind_name(item.kind));
      return container.text().find(item.text()) != std::string::npos;
    case Kind::List:
      return std::any_of(container.list->begin(), container.list->end(), [&](const Value& v) { return equal(v, item); });
    case Kind::Dict:
    case Kind::Namespace: return item.kind == Kind::String && container.dict->find(item.text()) != nullptr;
    default: fail_at(pos, "'in' needs a string, list or dict on the right, got ", kind_name(container.kind));
  }
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
      const std::string& text = v.text();
      std::vector<Value> chars;
      for (size_t i = 0; i < text.size();) {
        std::string c;
        tok::append_utf8(c, tok::next_code_point(text, i));
        chars.push_back(Value::of(std::move(c)));
        check_items(chars.size(), pos);
      }
      return chars;
    }
    case Kind::Undefined: return {};  // Jinja iterates an undefined value as empty
    default: fail_at(pos, "cannot iterate over ", kind_name(v.kind));
  }
}

}  // namespace slm::jinja
