// The built-in functions of templates: filters (`x | name`), tests
// (`x is name`), the methods of strings and dicts (`s.strip()`) and the
// global functions (`range`, `namespace`, ...).
#pragma once

#include "tokenizer/jinja/value.h"

#include <string>
#include <string_view>
#include <unordered_set>

namespace slm::jinja {

// The names filter() and run_test() know; the parser rejects any other.
const std::unordered_set<std::string_view>& filter_names();
const std::unordered_set<std::string_view>& test_names();

Value filter(const std::string& name, const Value& v, Args& args, size_t pos);
bool run_test(const std::string& name, const Value& v, const Args& args, size_t pos);
// The method `name` of a string or dict, bound to `self`; undefined where
// there is none.
Value method(const Value& self, const std::string& name);
// raise_exception, strftime_now, range, namespace and dict.
void add_globals(Scope& globals);

}  // namespace slm::jinja
