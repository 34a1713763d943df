// The parser: tokens to the syntax tree, by recursive descent. Unknown
// statements, filters and tests are errors here, when the template is
// loaded, rather than when a conversation first reaches them.
#pragma once

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"

#include <vector>

namespace slm::jinja {

Body parse(std::vector<Token> tokens);

}  // namespace slm::jinja
