// Errors of the template language, raised alike by the lexer, the parser
// and the interpreter.
#pragma once

#include <sstream>
#include <string>
#include <utility>

namespace slm::jinja {

// A failure at a byte offset of the source; ChatTemplate's render() and
// constructor turn it into an slm::Error with the origin and line:column.
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

}  // namespace slm::jinja
