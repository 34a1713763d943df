#include "tokenizer/jinja/filters.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/strings.h"
#include "tokenizer/unicode.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <ctime>
#include <optional>

namespace slm::jinja {

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

// ---- methods of strings and dicts

namespace {

std::optional<std::string> optional_string(const Args& args, size_t index, std::string_view name, size_t pos) {
  const Value* v = args.get(index, name);
  if (!v || v->kind == Kind::None) return std::nullopt;
  if (v->kind != Kind::String) fail_at(pos, "argument '", name, "' must be a string, got ", kind_name(v->kind));
  return v->text();
}

const Value& required(const Args& args, size_t index, std::string_view name, std::string_view function, size_t pos) {
  const Value* v = args.get(index, name);
  if (!v) fail_at(pos, function, "() needs the argument '", name, "'");
  return *v;
}

std::string required_string(const Args& args, size_t index, std::string_view name, std::string_view function, size_t pos) {
  const Value& v = required(args, index, name, function, pos);
  if (v.kind != Kind::String) fail_at(pos, function, "(): '", name, "' must be a string, got ", kind_name(v.kind));
  return v.text();
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
    return prefix ? s.starts_with(a.text()) : s.ends_with(a.text());
  };
  if (affix.kind == Kind::List) return std::any_of(affix.list->begin(), affix.list->end(), one);
  return one(affix);
}

}  // namespace

Value method(const Value& self, const std::string& name) {
  auto bound = [](auto body) { return Value::of(Callable(body)); };
  if (self.kind == Kind::String) {
    const std::string s = self.text();
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
        for (std::string& part : split(s, separator, optional_int(args, 1, "maxsplit", -1, pos), pos)) {
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
                                     optional_int(args, 2, "count", -1, pos), pos));
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
          if (name == "items") out.push_back(Value::tuple_of(Items{Value::of(k), v}));
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

bool run_test(const std::string& name, const Value& v, const Args& args, size_t pos) {
  auto argument = [&]() -> const Value& { return required(args, 0, "value", name, pos); };
  if (name == "defined") return v.kind != Kind::Undefined;
  if (name == "undefined") return v.kind == Kind::Undefined;
  if (name == "none") return v.kind == Kind::None;
  if (name == "string") return v.kind == Kind::String;
  if (name == "number") return v.is_number() || v.kind == Kind::Bool;  // Python's bool is a Number
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
    spend(weight(v), pos);
    return v.kind == Kind::String && change_case(v.text(), name == "lower" ? Case::Lower : Case::Upper) == v.text();
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

namespace {

// int(x) of a float: toward zero, and only where an int64 holds it.
int64_t truncate(double d, size_t pos) {
  if (!(std::fabs(d) < 9.2e18)) fail_at(pos, "cannot convert ", float_repr(d), " to an integer");
  return static_cast<int64_t>(d);
}

// item.a.b for map/selectattr/sort(attribute=...): dotted keys, and list indices.
Value attribute_path(const Value& item, const std::string& path, size_t pos) {
  Value v = item;
  for (const std::string& part : split(path, std::string("."), -1, pos)) {
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

// The filter itself; filter() pays for it.
Value apply(const std::string& name, const Value& v, Args& args, size_t pos) {
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
      style.item_separator = ',';
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
      style.item_separator = (*separators->list)[0].text();
      style.key_separator = (*separators->list)[1].text();
    }
    std::string out;
    append_json(out, v, style, pos);
    return Value::of(std::move(out));
  }
  if (name == "string") return Value::of(to_string(v, pos));
  if (name == "bool") return Value::of(truthy(v));
  if (name == "length" || name == "count") {
    if (v.kind == Kind::String) return Value::of(count_code_points(v.text()));
    needs({Kind::List, Kind::Dict, Kind::Namespace});
    return Value::of(static_cast<int64_t>(v.kind == Kind::List ? v.list->size() : v.dict->items.size()));
  }
  // The string filters take any value as its str(), as Jinja2's do.
  const auto as_text = [&] { return v.kind == Kind::String ? v.text() : to_string(v, pos); };
  if (name == "trim") return Value::of(strip(as_text(), optional_string(args, 0, "chars", pos), true, true));
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    return Value::of(change_case(as_text(), name == "upper" ? Case::Upper : name == "lower" ? Case::Lower : name == "title" ? Case::Title : Case::Capitalize));
  }
  if (name == "replace") {
    return Value::of(replace_all(as_text(), required_string(args, 0, "old", "replace", pos), required_string(args, 1, "new", "replace", pos),
                                 optional_int(args, 2, "count", -1, pos), pos));
  }
  if (name == "wordcount") return Value::of(static_cast<int64_t>(split(as_text(), std::nullopt, -1, pos).size()));
  if (name == "indent") {
    const Value* width = args.get(0, "width");
    std::string prefix(4, ' ');
    if (width && width->kind == Kind::Int) {
      const auto spaces = static_cast<size_t>(std::max<int64_t>(0, width->integer));
      check_text(spaces, pos);
      prefix = std::string(spaces, ' ');
    } else if (width && width->kind == Kind::String) {
      prefix = width->text();
    }
    const bool first = optional_bool(args, 1, "first", false), blank = optional_bool(args, 2, "blank", false);
    const std::string text = as_text();
    std::string out;
    for (size_t start = 0, line = 0;; ++line) {
      const size_t end = std::min(text.find('\n', start), text.size());
      if (line) out += '\n';
      if ((line > 0 || first) && (blank || end > start)) out += prefix;
      out.append(text, start, end - start);
      check_text(out.size(), pos);
      if (end == text.size()) break;
      start = end + 1;
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
    const std::string text(tok::trim_whitespace(v.text(), true, true));
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
    if (method != "common" && method != "floor" && method != "ceil") fail_at(pos, "round: method must be common, floor or ceil");
    // Python's round(): an int stays an int, and halves go to the even
    // neighbour (2.5 → 2.0); floor and ceil divide, so they give a float.
    if (method == "common" && v.kind == Kind::Int && precision >= 0) return v;
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = v.as_double() * scale;
    const double r = method == "common" ? std::nearbyint(x) : method == "floor" ? std::floor(x) : std::ceil(x);
    return Value::of(r / scale);
  }
  if (name == "items" || name == "dictsort") {
    needs({Kind::Dict, Kind::Namespace});
    Items out;
    for (const auto& [k, item] : v.dict->items) out.push_back(Value::tuple_of(Items{Value::of(k), item}));
    if (name == "dictsort") {
      std::stable_sort(out.begin(), out.end(), [](const Value& a, const Value& b) { return (*a.list)[0].text() < (*b.list)[0].text(); });
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
    for (const Value& c : items) out += c.text();
    return Value::of(std::move(out));
  }
  if (name == "join") {
    const std::string separator = optional_string(args, 0, "d", pos).value_or("");
    const std::optional<std::string> attribute = optional_string(args, 1, "attribute", pos);
    std::string out;
    const std::vector<Value> items = sequence();
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += separator;
      out += to_string(attribute ? attribute_path(items[i], *attribute, pos) : items[i], pos);
      check_text(out.size(), pos);
    }
    return Value::of(std::move(out));
  }
  if (name == "unique") {
    // Jinja2's: strings compared without case unless case_sensitive, by an
    // attribute if given; the first of each kept. Strings and numbers go by
    // a key as equal() compares them (1, 1.0 and true alike), so that a long
    // list is not compared with itself pairwise; containers (and NaN, equal
    // to nothing) against those kept.
    const bool case_sensitive = optional_bool(args, 0, "case_sensitive", false);
    const std::optional<std::string> attribute = optional_string(args, 1, "attribute", pos);
    std::unordered_set<std::string> keys;
    Items out, containers;
    for (const Value& item : sequence()) {
      const Value subject = attribute ? attribute_path(item, *attribute, pos) : item;
      bool fresh;
      if (subject.kind == Kind::String) {
        fresh = keys.insert("s" + (case_sensitive ? subject.text() : change_case(subject.text(), Case::Lower))).second;
      } else if ((subject.is_number() || subject.kind == Kind::Bool) && !std::isnan(subject.as_double())) {
        const double d = subject.as_double();
        fresh = keys.insert(subject.kind == Kind::Int                               ? "i" + std::to_string(subject.integer)
                            : d == std::trunc(d) && std::fabs(d) < 9.2e18 ? "i" + std::to_string(static_cast<int64_t>(d))
                                                                          : "f" + float_repr(d)).second;
      } else if (subject.kind == Kind::None || subject.kind == Kind::Undefined) {
        fresh = keys.insert(subject.kind == Kind::None ? "n" : "u").second;
      } else {
        fresh = std::none_of(containers.begin(), containers.end(), [&](const Value& seen) { return equal(seen, subject); });
        if (fresh) containers.push_back(subject);
      }
      if (fresh) out.push_back(item);
    }
    return Value::of(std::move(out));
  }
  if (name == "sort" || name == "min" || name == "max") {
    std::vector<Value> items = sequence();
    const bool reverse = name == "sort" && optional_bool(args, 0, "reverse", false);
    const bool case_sensitive = optional_bool(args, name == "sort" ? 1 : 0, "case_sensitive", false);
    const std::optional<std::string> attribute = optional_string(args, name == "sort" ? 2 : 1, "attribute", pos);
    // Each item's key once, then the items in the order of their keys.
    std::vector<Value> keys;
    keys.reserve(items.size());
    for (const Value& item : items) {
      Value k = attribute ? attribute_path(item, *attribute, pos) : item;
      if (!case_sensitive && k.kind == Kind::String) k = Value::of(change_case(k.text(), Case::Lower));
      keys.push_back(std::move(k));
    }
    std::vector<size_t> order(items.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    auto less = [&](size_t a, size_t b) { return compare(keys[a], keys[b], pos) < 0; };
    if (name == "sort") {
      spend(static_cast<int64_t>(items.size() * std::bit_width(items.size())), pos);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reverse ? less(b, a) : less(a, b); });
      Items sorted;
      sorted.reserve(items.size());
      for (size_t i : order) sorted.push_back(items[i]);
      return Value::of(std::move(sorted));
    }
    if (items.empty()) return Value{};
    return items[name == "min" ? *std::min_element(order.begin(), order.end(), less) : *std::max_element(order.begin(), order.end(), less)];
  }
  if (name == "map") {
    Items out;
    const std::vector<Value> items = sequence();
    if (const auto attribute = optional_string(args, 99, "attribute", pos)) {
      const Value* fallback = args.get(99, "default");
      for (const Value& item : items) {
        Value mapped = attribute_path(item, *attribute, pos);
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
    for (const Value& item : items) out.push_back(filter(inner, item, rest, pos));
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
      const Value subject = by_attribute ? attribute_path(item, attribute, pos) : item;
      const bool match = test ? run_test(*test, subject, test_args, pos) : truthy(subject);
      if (match == keep_matches) out.push_back(item);
    }
    return Value::of(std::move(out));
  }
  fail_at(pos, "unknown filter '", name, "'");
}

}  // namespace

Value filter(const std::string& name, const Value& v, Args& args, size_t pos) {
  Value result = apply(name, v, args, pos);
  spend(weight(v) + weight(result), pos);
  return result;
}

// ---- globals

namespace {

std::string strftime_now(const std::string& format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string out(256, '\0');
  const size_t n = std::strftime(out.data(), out.size(), format.c_str(), &local);
  out.resize(n);
  return out;
}

}  // namespace

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

}  // namespace slm::jinja
