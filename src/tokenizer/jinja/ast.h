// The syntax tree the parser builds and the interpreter walks. Every node
// keeps the byte offset it starts at, for errors.
#pragma once

#include "tokenizer/jinja/value.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace slm::jinja {

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
  bool tuple = false;           // List: written as a tuple, `(a, b)` or `a, b`
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

// Templates come with model files: nesting is bounded so that no template
// can exhaust the stack of the recursive parser or interpreter, and so are
// the text it builds and the loop iterations it runs, so that none can
// exhaust memory or hang (`{% set s = s ~ s %}` in a loop, nested loops over
// ranges). A real render is kilobytes and a few thousand iterations.
constexpr int kMaxNesting = 200;
constexpr size_t kMaxText = size_t{64} << 20;  // bytes of one string, list or render
constexpr int64_t kMaxIterations = 1'000'000;

}  // namespace slm::jinja
