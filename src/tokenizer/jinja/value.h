// The values templates compute with, and what the language does with any
// value: truthiness, equality, order, membership, iteration, printing and
// JSON.
#pragma once

#include <slm/chat_template.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slm::jinja {

struct Value;
using Items = std::vector<Value>;
struct Dict;
struct Args;
struct Scope;
using Callable = std::function<Value(Args&, Scope&, size_t pos)>;

enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

struct Value {
  explicit Value(Kind k = Kind::Undefined) : kind(k) {}
  Kind kind;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  // A string's text, shared: values never change in place, and a copy of a
  // value (into a list, a loop variable, a filter's result) must not copy
  // megabytes.
  std::shared_ptr<const std::string> string;
  std::shared_ptr<Items> list;
  std::shared_ptr<Dict> dict;  // Dict and Namespace (a namespace is shared, so assignments are seen by all)
  std::shared_ptr<const Callable> function;
  bool tuple = false;  // List: a Python tuple (it prints as (a, b)); it behaves as a list otherwise
  // A list or dict: 1 + the depth of its deepest item when it was built (a
  // namespace's attributes can be assigned deeper values later). Set
  // statements bound it, so that equal() and the destructors recurse only so deep.
  uint32_t depth = 0;

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
    v.string = std::make_shared<const std::string>(std::move(s));
    return v;
  }
  static Value of(Items items) {
    Value v{Kind::List};
    v.list = std::make_shared<Items>(std::move(items));
    for (const Value& item : *v.list) v.depth = std::max(v.depth, item.depth);
    ++v.depth;
    return v;
  }
  static Value tuple_of(Items items) {
    Value v = of(std::move(items));
    v.tuple = true;
    return v;
  }
  static Value of(Callable f) {
    Value v{Kind::Function};
    v.function = std::make_shared<const Callable>(std::move(f));
    return v;
  }
  const std::string& text() const {
    static const std::string empty;
    return string ? *string : empty;
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

Value make_dict(Dict d, Kind kind = Kind::Dict);

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
const char* kind_name(Kind kind);

bool truthy(const Value& v);
// What an operation pays (spend()) to visit or make `v`: 1, and 1 per item
// of a list or dict, 1 per 8 bytes of a string.
int64_t weight(const Value& v);
// At most kMaxNesting arrays and objects deep (else a TemplateError at
// kNoPosition: the context is not in the source).
Value from_json(const ChatJson& j, int depth = 0);

// Python's repr of a float: the shortest digits that read back, in fixed
// notation for exponents -4..15 and scientific otherwise, and ".0" on whole numbers.
std::string float_repr(double d);

struct JsonStyle {
  int indent = -1;  // < 0: one line
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_separator = ", ", key_separator = ": ";
};

// json.dumps as transformers' tojson calls it (and as a list or dict prints).
void append_json(std::string& out, const Value& v, const JsonStyle& style, size_t pos);

// What {{ value }} prints: str() of the Python value, as Jinja2 prints it
// (True, None, [1, 'a'], {'k': (1, 2)}); an undefined value prints nothing.
std::string to_string(const Value& v, size_t pos);
// Python's repr(): how a value prints inside a list, tuple or dict.
std::string repr(const Value& v, size_t pos);

bool equal(const Value& a, const Value& b);
// Numbers (and booleans) with numbers, strings with strings: -1, 0 or 1.
int compare(const Value& a, const Value& b, size_t pos);
// `item in container`.
bool contains(const Value& container, const Value& item, size_t pos);
// What a for loop visits: the items of a list, the keys of a dict, the
// characters of a string.
std::vector<Value> iterate(const Value& v, size_t pos);

}  // namespace slm::jinja
