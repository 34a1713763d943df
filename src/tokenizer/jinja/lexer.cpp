#include "tokenizer/jinja/lexer.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/unicode.h"

#include <cctype>
#include <charconv>
#include <string>

namespace slm::jinja {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Removes trailing whitespace (Unicode, as JavaScript's trimEnd) from a text token.
void trim_text_end(std::vector<Token>& tokens) {
  if (tokens.empty() || tokens.back().type != Tok::Text) return;
  tokens.back().text = std::string(tok::trim_whitespace(tokens.back().text, false, true));
  if (tokens.back().text.empty()) tokens.pop_back();
}

size_t skip_whitespace(std::string_view src, size_t i) {
  while (i < src.size()) {
    size_t next = i;
    if (!tok::is_whitespace(tok::next_code_point(src, next))) break;
    i = next;
  }
  return i;
}

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Token> run() {
    size_t i = 0;
    while (i < src_.size()) {
      // Text up to the next tag.
      size_t next = i;
      while (next < src_.size() && !is_tag_start(next)) ++next;
      if (next > i) tokens_.push_back({Tok::Text, std::string(src_.substr(i, next - i)), i});
      if (next >= src_.size()) break;
      i = tag(next);
    }
    std::erase_if(tokens_, [](const Token& t) { return t.type == Tok::Comment; });
    tokens_.push_back({Tok::End, "", src_.size()});
    return std::move(tokens_);
  }

 private:
  bool is_tag_start(size_t i) const {
    return src_[i] == '{' && i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#');
  }

  // lstrip_blocks: spaces and tabs between the start of a line and a block
  // or comment tag are not output.
  void lstrip_before(size_t tag_pos) {
    size_t start = tag_pos;
    while (start > 0 && (src_[start - 1] == ' ' || src_[start - 1] == '\t')) --start;
    if (start != tag_pos && (start == 0 || src_[start - 1] == '\n') && !tokens_.empty() &&
        tokens_.back().type == Tok::Text && tokens_.back().pos + tokens_.back().text.size() == tag_pos) {
      std::string& text = tokens_.back().text;
      text.resize(text.size() - (tag_pos - start));
      if (text.empty()) tokens_.pop_back();
    }
  }

  // After a block or comment tag: `-` skips all whitespace; otherwise
  // trim_blocks drops one newline.
  size_t after_tag(size_t i, bool strip) const {
    if (strip) return skip_whitespace(src_, i);
    if (i < src_.size() && src_[i] == '\n') return i + 1;
    return i;
  }

  size_t tag(size_t start) {
    const char kind = src_[start + 1];
    const bool strip_before = start + 2 < src_.size() && src_[start + 2] == '-';
    if (kind != '{') lstrip_before(start);
    if (strip_before) trim_text_end(tokens_);
    size_t i = start + (strip_before ? 3 : 2);
    if (kind == '#') {
      const size_t end = src_.find("#}", i);
      if (end == std::string_view::npos) fail_at(start, "comment is not closed: expected '#}'");
      const bool strip_after = end > i && src_[end - 1] == '-';
      // Kept until the end of lexing so that a later '{%-' strips only the
      // text after the comment, as Jinja does.
      tokens_.push_back({Tok::Comment, "", start});
      return after_tag(end + 2, strip_after);
    }
    tokens_.push_back({kind == '{' ? Tok::OpenExpression : Tok::OpenStatement, "", start});
    const char close = kind == '{' ? '}' : '%';
    int brace_depth = 0;  // a dict literal's '}}' does not close {{ ... }}
    while (true) {
      while (i < src_.size() && is_space(src_[i])) ++i;
      if (i >= src_.size()) {
        fail_at(start, "tag is not closed: expected '", close == '}' ? "}}" : "%}", "'");
      }
      const bool strip_after = src_[i] == '-' && i + 2 < src_.size() && src_.compare(i + 1, 2, std::string{close, '}'}) == 0;
      if ((strip_after || src_.compare(i, 2, std::string{close, '}'}) == 0) && (close == '%' || brace_depth == 0)) {
        const size_t end = i + (strip_after ? 3 : 2);
        tokens_.push_back({kind == '{' ? Tok::CloseExpression : Tok::CloseStatement, "", i});
        if (kind == '{') return strip_after ? skip_whitespace(src_, end) : end;
        return after_tag(end, strip_after);
      }
      i = expression_token(i, brace_depth);
    }
  }

  size_t expression_token(size_t i, int& brace_depth) {
    const char c = src_[i];
    if (c == '\'' || c == '"') return string_literal(i);
    if (c >= '0' && c <= '9') {
      size_t end = i;
      while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
      auto digit = [&](size_t at) { return at < src_.size() && std::isdigit(static_cast<unsigned char>(src_[at])); };
      bool is_float = false;
      // After '.', digits are an index (x.0.1), never a fraction.
      if (!(tokens_.back().type == Tok::Operator && tokens_.back().text == ".")) {
        if (end < src_.size() && src_[end] == '.' && digit(end + 1)) {
          is_float = true;
          ++end;
          while (digit(end)) ++end;
        }
        const size_t sign = end + 1 < src_.size() && (src_[end + 1] == '+' || src_[end + 1] == '-') ? 1 : 0;
        if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E') && digit(end + 1 + sign)) {
          is_float = true;
          end += 1 + sign;
          while (digit(end)) ++end;
        }
      }
      tokens_.push_back({is_float ? Tok::Float : Tok::Int, std::string(src_.substr(i, end - i)), i});
      return end;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t end = i;
      while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
      tokens_.push_back({Tok::Name, std::string(src_.substr(i, end - i)), i});
      return end;
    }
    static constexpr std::string_view kOperators[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~",
                                                      "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="};
    for (std::string_view op : kOperators) {
      if (src_.substr(i, op.size()) == op) {
        if (op == "{") ++brace_depth;
        if (op == "}") --brace_depth;
        tokens_.push_back({Tok::Operator, std::string(op), i});
        return i + op.size();
      }
    }
    size_t end = i;
    fail_at(i, "unexpected character '", tok::next_code_point(src_, end) < 0x80 ? std::string(1, c) : std::string(src_.substr(i, end - i)), "'");
  }

  size_t string_literal(size_t start) {
    const char quote = src_[start];
    std::string value;
    size_t i = start + 1;
    while (true) {
      if (i >= src_.size()) fail_at(start, "string literal is not closed: expected ", quote);
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) fail_at(i, "string literal is not closed: expected ", quote);
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\\': value += '\\'; break;
        case 'x':
        case 'u': {
          const size_t digits = e == 'x' ? 2 : 4;
          const std::string_view hex = src_.substr(i, digits);
          unsigned code = 0;
          const auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), code, 16);
          if (hex.size() != digits || ec != std::errc() || end != hex.data() + hex.size()) {
            fail_at(i - 2, "invalid escape \\", e, ": expected ", digits, " hexadecimal digits");
          }
          tok::append_utf8(value, static_cast<char32_t>(code));
          i += digits;
          break;
        }
        default: fail_at(i - 2, "unknown escape \\", e, " in a string literal");
      }
    }
    tokens_.push_back({Tok::String, std::move(value), start});
    return i + 1;
  }

  std::string_view src_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(std::string_view source) { return Lexer(source).run(); }

}  // namespace slm::jinja
