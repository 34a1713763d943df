// Errors of the template language, raised alike by the lexer, the parser
// and the interpreter.
#pragma once

#include <sstream>
#include <string>
#include <utility>

namespace slm::jinja {

// Templates come with model files: nesting is bounded so that no template
// can exhaust the stack of the recursive parser, interpreter or printers (a
// value printed or written as JSON is at most kMaxNesting lists and dicts
// deep), and so are the text it builds and the loop iterations it runs, so
// that none can exhaust memory or hang (`{% set s = s ~ s %}` in a loop,
// nested loops over ranges). A real render is kilobytes and a few thousand
// iterations.
constexpr int kMaxNesting = 200;
constexpr size_t kMaxText = size_t{64} << 20;  // bytes of one string or render
constexpr size_t kMaxItems = size_t{1} << 19;  // items of one list (tens of MiB of values)
constexpr int64_t kMaxIterations = 1'000'000;
constexpr int64_t kMaxSteps = 20'000'000;  // see spend()

// A failure at a byte offset of the source; ChatTemplate's render() and
// constructor turn it into an slm::Error with the origin and line:column.
struct TemplateError {
  size_t pos;  // kNoPosition: not known where raised (outside a statement: in the render context)
  std::string message;
};
constexpr size_t kNoPosition = std::string::npos;

template <class... Parts>
[[noreturn]] void fail_at(size_t pos, Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw TemplateError{pos, message.str()};
}

// Checked while a string or list is built, not after: the parts of one can
// be many times the limit.
inline void check_text(size_t bytes, size_t pos) {
  if (bytes > kMaxText) fail_at(pos, "a string of more than ", kMaxText >> 20, " MiB");
}
inline void check_items(size_t items, size_t pos) {
  if (items > kMaxItems) fail_at(pos, "a list of more than ", kMaxItems, " items");
}

// The steps left to the render running on this thread (render() gives it
// kMaxSteps). Every expression evaluated is a step, and every operation
// also pays for what it visits and makes (weight() in value.h: an item, 8
// bytes; a sort n log n), so that no template hangs its render within the
// other limits: a macro calling itself twice, 200 deep; a million loop
// iterations each joining a long list; equal() over shared lists.
inline thread_local int64_t steps_left = 0;
// kNoPosition where the caller does not know the place: the statement
// running fills it in (Interpreter::run).
inline void spend(int64_t steps, size_t pos) {
  steps_left -= steps;
  if (steps_left < 0) fail_at(pos, "the render took more than ", kMaxSteps, " steps");
}

}  // namespace slm::jinja
