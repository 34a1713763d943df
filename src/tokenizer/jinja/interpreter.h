// The interpreter: walks the syntax tree of a template and writes what it
// outputs.
#pragma once

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

#include <string>
#include <unordered_map>

namespace slm::jinja {

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

// What `body` outputs, run with `globals` as the outermost scope.
std::string render(const Body& body, Scope& globals);

}  // namespace slm::jinja
