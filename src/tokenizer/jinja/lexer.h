// The lexer: template source to tokens, with the whitespace control of
// transformers (trim_blocks, lstrip_blocks) and of '-' applied to the text
// between tags.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace slm::jinja {

enum class Tok {
  Text, Comment, OpenExpression, CloseExpression, OpenStatement, CloseStatement,
  Name, String, Int, Float, Operator, End
};

struct Token {
  Tok type;
  std::string text;  // text, name, string value, number or operator spelling
  size_t pos;
};

// The tokens of `source` without its comments, ending in Tok::End.
std::vector<Token> lex(std::string_view source);

}  // namespace slm::jinja
