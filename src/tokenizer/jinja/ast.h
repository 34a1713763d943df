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

}  // namespace slm::jinja
