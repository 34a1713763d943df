#include "tokenizer/jinja/parser.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/filters.h"

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <string>
#include <string_view>

namespace slm::jinja {

namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body program() { return block({}); }

 private:
  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(at_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[std::min(at_++, tokens_.size() - 1)]; }
  bool is_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Operator && peek(ahead).text == op;
  }
  bool is_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Name && peek(ahead).text == name;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::End: return "the end of the template";
      case Tok::Text:
      case Tok::Comment: return "text";
      case Tok::OpenExpression: return "'{{'";
      case Tok::CloseExpression: return "'}}'";
      case Tok::OpenStatement: return "'{%'";
      case Tok::CloseStatement: return "'%}'";
      case Tok::String: return "a string";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(std::string_view op, std::string_view context) {
    if (!is_op(op)) fail_at(peek().pos, "expected '", op, "' ", context, ", got ", describe(peek()));
    ++at_;
  }
  void expect(Tok type, std::string_view what) {
    if (peek().type != type) fail_at(peek().pos, "expected ", what, ", got ", describe(peek()));
    ++at_;
  }
  std::string expect_name(std::string_view what) {
    if (peek().type != Tok::Name) fail_at(peek().pos, "expected ", what, ", got ", describe(peek()));
    return next().text;
  }
  void end_statement() { expect(Tok::CloseStatement, "'%}'"); }

  // Statements up to (not including) a `{% name %}` in `ends`.
  Body block(std::initializer_list<std::string_view> ends) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.type == Tok::End) {
        if (ends.size() == 0) return body;
        std::string names;
        for (std::string_view e : ends) names += (names.empty() ? "'{% " : " or '{% ") + std::string(e) + " %}'";
        fail_at(t.pos, "unexpected end of the template: expected ", names);
      }
      if (t.type == Tok::OpenStatement && peek(1).type == Tok::Name &&
          std::find(ends.begin(), ends.end(), peek(1).text) != ends.end()) {
        return body;
      }
      body.push_back(statement());
    }
  }

  std::unique_ptr<Stmt> make(Stmt::Type type, size_t pos) {
    auto s = std::make_unique<Stmt>();
    s->type = type;
    s->pos = pos;
    return s;
  }

  std::unique_ptr<Stmt> statement() {
    const Nesting nesting(*this, peek().pos);
    const Token& t = next();
    if (t.type == Tok::Text) {
      auto s = make(Stmt::Type::Text, t.pos);
      s->text = t.text;
      return s;
    }
    if (t.type == Tok::OpenExpression) {
      auto s = make(Stmt::Type::Output, t.pos);
      s->expr = expression();
      expect(Tok::CloseExpression, "'}}'");
      return s;
    }
    const size_t pos = t.pos;
    const size_t keyword_pos = peek().pos;
    const std::string keyword = expect_name("a statement name after '{%'");
    if (keyword == "if") return if_statement(pos);
    if (keyword == "for") return for_statement(pos);
    if (keyword == "set") return set_statement(pos);
    if (keyword == "macro") return macro_statement(pos);
    if (keyword == "call") return call_statement(pos);
    if (keyword == "filter") return filter_statement(pos);
    if (keyword == "generation") {  // the assistant-mask marker of transformers; renders its body
      end_statement();
      auto s = make(Stmt::Type::Scope, pos);
      s->body = block({"endgeneration"});
      close("endgeneration");
      return s;
    }
    if (keyword == "break" || keyword == "continue") {
      end_statement();
      return make(keyword == "break" ? Stmt::Type::Break : Stmt::Type::Continue, pos);
    }
    static constexpr std::string_view kClosers[] = {"elif", "else", "endif", "endfor", "endset", "endmacro",
                                                    "endcall", "endfilter", "endgeneration"};
    if (std::find(std::begin(kClosers), std::end(kClosers), keyword) != std::end(kClosers)) {
      fail_at(pos, "unexpected '{% ", keyword, " %}'");
    }
    fail_at(keyword_pos, "unknown statement '", keyword, "'");
  }

  void close(std::string_view end) {
    expect(Tok::OpenStatement, "'{%'");
    if (!is_name(end)) fail_at(peek().pos, "expected '", end, "'");
    ++at_;
    end_statement();
  }

  std::unique_ptr<Stmt> if_statement(size_t pos) {
    auto s = make(Stmt::Type::If, pos);
    s->expr = expression();
    end_statement();
    s->body = block({"elif", "else", "endif"});
    const size_t branch = peek().pos;
    ++at_;
    const std::string which = next().text;
    if (which == "elif") {
      s->orelse.push_back(if_statement(branch));
      return s;  // the innermost elif consumed the endif
    }
    if (which == "else") {
      end_statement();
      s->orelse = block({"endif"});
      ++at_;
      ++at_;
    }
    end_statement();
    return s;
  }

  std::unique_ptr<Stmt> for_statement(size_t pos) {
    auto s = make(Stmt::Type::For, pos);
    do {
      s->names.push_back(expect_name("a loop variable"));
    } while (is_op(",") && (++at_, true));
    if (!is_name("in")) fail_at(peek().pos, "expected 'in' after the loop variable, got ", describe(peek()));
    ++at_;
    s->expr = or_expression();
    if (is_name("if")) {
      ++at_;
      s->condition = or_expression();
    }
    end_statement();
    s->body = block({"else", "endfor"});
    if (is_name("else", 1)) {
      at_ += 2;
      end_statement();
      s->orelse = block({"endfor"});
    }
    close("endfor");
    return s;
  }

  std::unique_ptr<Stmt> set_statement(size_t pos) {
    auto s = make(Stmt::Type::Set, pos);
    s->names.push_back(expect_name("a variable name after 'set'"));
    if (is_op(".")) {
      ++at_;
      s->text = expect_name("an attribute name");
    } else {
      while (is_op(",")) {
        ++at_;
        s->names.push_back(expect_name("a variable name"));
      }
    }
    if (is_op("=")) {
      ++at_;
      s->expr = expression_sequence();
      end_statement();
      return s;
    }
    if (s->names.size() > 1) fail_at(peek().pos, "expected '=' after the variables, got ", describe(peek()));
    end_statement();
    s->body = block({"endset"});
    close("endset");
    return s;
  }

  std::vector<Param> parameters() {
    std::vector<Param> params;
    expect_op("(", "before the parameters");
    while (!is_op(")")) {
      Param p;
      p.name = expect_name("a parameter name");
      if (is_op("=")) {
        ++at_;
        p.default_value = expression();
      } else if (!params.empty() && params.back().default_value) {
        fail_at(peek().pos, "parameter '", p.name, "' without a default follows one with a default");
      }
      params.push_back(std::move(p));
      if (!is_op(",")) break;
      ++at_;
    }
    expect_op(")", "after the parameters");
    return params;
  }

  std::unique_ptr<Stmt> macro_statement(size_t pos) {
    auto s = make(Stmt::Type::Macro, pos);
    s->text = expect_name("a macro name");
    s->params = parameters();
    end_statement();
    s->body = block({"endmacro"});
    close("endmacro");
    return s;
  }

  std::unique_ptr<Stmt> call_statement(size_t pos) {
    auto s = make(Stmt::Type::CallBlock, pos);
    if (is_op("(")) s->params = parameters();
    s->expr = postfix(primary());
    if (s->expr->type != Expr::Type::Call) fail_at(s->expr->pos, "expected a macro call after 'call'");
    end_statement();
    s->body = block({"endcall"});
    close("endcall");
    return s;
  }

  std::unique_ptr<Stmt> filter_statement(size_t pos) {
    auto s = make(Stmt::Type::FilterBlock, pos);
    s->expr = filter_call(nullptr);
    end_statement();
    s->body = block({"endfilter"});
    close("endfilter");
    return s;
  }

  // ---- expressions, loosest binding first

  static Value integer_literal(const Token& t) {
    int64_t v = 0;
    if (std::from_chars(t.text.data(), t.text.data() + t.text.size(), v).ec != std::errc()) {
      fail_at(t.pos, "integer literal out of range");
    }
    return Value::of(v);
  }

  ExprPtr node(Expr::Type type, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->type = type;
    e->pos = pos;
    return e;
  }

  // `a, b` (a tuple) where a statement allows it: `set x = 1, 2`.
  ExprPtr expression_sequence() {
    ExprPtr first = expression();
    if (!is_op(",")) return first;
    auto list = node(Expr::Type::List, first->pos);
    list->tuple = true;
    list->items.push_back(std::move(first));
    while (is_op(",")) {
      ++at_;
      if (is_op(")")) break;  // `(1,)`: a trailing comma
      list->items.push_back(expression());
    }
    return list;
  }

  ExprPtr expression() {
    const Nesting nesting(*this, peek().pos);
    ExprPtr value = or_expression();
    if (!is_name("if")) return value;
    const size_t pos = next().pos;
    ExprPtr condition = or_expression();
    auto e = node(Expr::Type::Select, pos);
    e->items.push_back(std::move(condition));
    e->items.push_back(std::move(value));
    if (is_name("else")) {
      ++at_;
      e->type = Expr::Type::Ternary;
      e->items.push_back(expression());
    }
    return e;
  }

  ExprPtr or_expression() {
    ExprPtr left = and_expression();
    while (is_name("or")) {
      auto e = node(Expr::Type::Or, next().pos);
      e->items.push_back(std::move(left));
      e->items.push_back(and_expression());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr and_expression() {
    ExprPtr left = not_expression();
    while (is_name("and")) {
      auto e = node(Expr::Type::And, next().pos);
      e->items.push_back(std::move(left));
      e->items.push_back(not_expression());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr not_expression() {
    if (!is_name("not")) return comparison();
    const Nesting nesting(*this, peek().pos);
    auto e = node(Expr::Type::Unary, next().pos);
    e->name = "not";
    e->items.push_back(not_expression());
    return e;
  }

  ExprPtr binary(std::string op, size_t pos, ExprPtr left, ExprPtr right) {
    auto e = node(Expr::Type::Binary, pos);
    e->name = std::move(op);
    e->items.push_back(std::move(left));
    e->items.push_back(std::move(right));
    return e;
  }

  ExprPtr comparison() {
    ExprPtr left = additive();
    while (true) {
      const size_t pos = peek().pos;
      std::string op;
      if (is_name("not") && is_name("in", 1)) {
        at_ += 2;
        op = "not in";
      } else if (is_name("in")) {
        ++at_;
        op = "in";
      } else if (peek().type == Tok::Operator &&
                 (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == "<=" ||
                  peek().text == ">" || peek().text == ">=")) {
        op = next().text;
      } else {
        return left;
      }
      left = binary(op, pos, std::move(left), additive());
    }
  }

  ExprPtr additive() {
    ExprPtr left = multiplicative();
    while (is_op("+") || is_op("-") || is_op("~")) {
      const Token& op = next();
      left = binary(op.text, op.pos, std::move(left), multiplicative());
    }
    return left;
  }

  ExprPtr multiplicative() {
    ExprPtr left = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = next();
      left = binary(op.text, op.pos, std::move(left), power());
    }
    return left;
  }

  ExprPtr power() {
    ExprPtr left = test();
    while (is_op("**")) {
      const Token& op = next();
      left = binary(op.text, op.pos, std::move(left), test());
    }
    return left;
  }

  ExprPtr test() {
    ExprPtr operand = filtered();
    while (is_name("is")) {
      auto e = node(Expr::Type::Test, next().pos);
      if (is_name("not")) {
        ++at_;
        e->negate = true;
      }
      const Token& name = peek();
      if (name.type == Tok::Name || (name.type == Tok::Operator && (name.text == "==" || name.text == "!="))) {
        e->name = next().text;
      } else {
        fail_at(name.pos, "expected a test name after 'is', got ", describe(name));
      }
      if (!test_names().contains(e->name)) fail_at(name.pos, "unknown test '", e->name, "'");
      if (is_op("(")) {
        e->args = arguments();
      } else if (test_takes_argument(e->name) && starts_bare_argument()) {
        e->args.positional.push_back(primary_postfix());  // `x is divisibleby 3`, `x is in [1, 2]`
      }
      e->items.push_back(std::move(operand));
      operand = std::move(e);
    }
    return operand;
  }

  // As Jinja decides whether a test without parentheses has an argument.
  bool starts_bare_argument() const {
    const Token& t = peek();
    if (t.type == Tok::String || t.type == Tok::Int || t.type == Tok::Float) return true;
    if (t.type == Tok::Operator) return t.text == "[" || t.text == "{";
    return t.type == Tok::Name && !is_name("and") && !is_name("or") && !is_name("else") && !is_name("if") &&
           !is_name("is") && !is_name("not") && !is_name("in");
  }

  static bool test_takes_argument(std::string_view name) {
    return name == "equalto" || name == "eq" || name == "==" || name == "ne" || name == "!=" || name == "in" ||
           name == "gt" || name == "ge" || name == "lt" || name == "le" || name == "divisibleby";
  }

  ExprPtr filtered() {
    ExprPtr operand = unary();
    while (is_op("|")) {
      ++at_;
      operand = filter_call(std::move(operand));
    }
    return operand;
  }

  // `name` or `name(args)` after '|' (or in {% filter %}), applied to `operand`.
  ExprPtr filter_call(ExprPtr operand) {
    const Token& name = peek();
    auto e = node(Expr::Type::Filter, name.pos);
    e->name = expect_name("a filter name");
    if (!filter_names().contains(e->name)) fail_at(name.pos, "unknown filter '", e->name, "'");
    if (is_op("(")) e->args = arguments();
    if (operand) e->items.push_back(std::move(operand));
    return e;
  }

  ExprPtr unary() {
    if (is_op("-") || is_op("+")) {
      const Nesting nesting(*this, peek().pos);
      const Token& op = next();
      auto e = node(Expr::Type::Unary, op.pos);
      e->name = op.text;
      e->items.push_back(unary());
      return e;
    }
    return primary_postfix();
  }

  ExprPtr primary_postfix() { return postfix(primary()); }

  CallArgs arguments() {
    CallArgs args;
    expect_op("(", "before the arguments");
    while (!is_op(")")) {
      if (peek().type == Tok::Name && is_op("=", 1)) {
        std::string key = next().text;
        ++at_;
        args.keyword.emplace_back(std::move(key), expression());
      } else {
        if (!args.keyword.empty()) fail_at(peek().pos, "a positional argument follows a keyword argument");
        args.positional.push_back(expression());
      }
      if (!is_op(",")) break;
      ++at_;
    }
    expect_op(")", "after the arguments");
    return args;
  }

  ExprPtr postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        const size_t pos = next().pos;
        auto attr = node(Expr::Type::Attr, pos);
        const Token& name = next();
        if (name.type == Tok::Name) {
          attr->name = name.text;
          attr->pos = name.pos;  // errors point at the attribute, not the dot
        } else if (name.type == Tok::Int) {  // x.0 as x[0]
          attr->type = Expr::Type::Index;
          auto index = node(Expr::Type::Literal, name.pos);
          index->literal = integer_literal(name);
          attr->items.push_back(std::move(e));
          attr->items.push_back(std::move(index));
          e = std::move(attr);
          continue;
        } else {
          fail_at(name.pos, "expected an attribute name after '.', got ", describe(name));
        }
        attr->items.push_back(std::move(e));
        e = std::move(attr);
      } else if (is_op("[")) {
        const size_t pos = next().pos;
        ExprPtr parts[3];
        int colons = 0;
        while (!is_op("]")) {
          if (is_op(":")) {
            if (++colons > 2) fail_at(peek().pos, "a slice takes at most start:stop:step");
            ++at_;
          } else {
            if (parts[colons]) fail_at(peek().pos, "expected ']' or ':', got ", describe(peek()));
            parts[colons] = expression();
          }
        }
        ++at_;
        if (colons == 0) {
          if (!parts[0]) fail_at(pos, "expected an index inside '[]'");
          auto index = node(Expr::Type::Index, pos);
          index->items.push_back(std::move(e));
          index->items.push_back(std::move(parts[0]));
          e = std::move(index);
        } else {
          auto slice = node(Expr::Type::Slice, pos);
          slice->items.push_back(std::move(e));
          for (ExprPtr& part : parts) slice->items.push_back(std::move(part));
          e = std::move(slice);
        }
      } else if (is_op("(")) {
        auto call = node(Expr::Type::Call, e->pos);
        call->args = arguments();
        call->items.push_back(std::move(e));
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr primary() {
    const Token& t = next();
    switch (t.type) {
      case Tok::Int:
      case Tok::Float: {
        auto e = node(Expr::Type::Literal, t.pos);
        if (t.type == Tok::Int) {
          e->literal = integer_literal(t);
        } else {
          double v = 0;
          if (std::from_chars(t.text.data(), t.text.data() + t.text.size(), v).ec != std::errc()) {
            fail_at(t.pos, "float literal out of range");
          }
          e->literal = Value::of(v);
        }
        return e;
      }
      case Tok::String: {
        std::string value = t.text;
        while (peek().type == Tok::String) value += next().text;  // "a" "b" is "ab"
        auto e = node(Expr::Type::Literal, t.pos);
        e->literal = Value::of(std::move(value));
        return e;
      }
      case Tok::Name: {
        auto e = node(Expr::Type::Literal, t.pos);
        if (t.text == "true" || t.text == "True") e->literal = Value::of(true);
        else if (t.text == "false" || t.text == "False") e->literal = Value::of(false);
        else if (t.text == "none" || t.text == "None") e->literal = Value::none();
        else {
          e->type = Expr::Type::Name;
          e->name = t.text;
        }
        return e;
      }
      case Tok::Operator:
        if (t.text == "(") {
          if (is_op(")")) {  // the empty tuple
            ++at_;
            auto e = node(Expr::Type::List, t.pos);
            e->tuple = true;
            return e;
          }
          ExprPtr inner = expression_sequence();
          expect_op(")", "to close '('");
          return inner;
        }
        if (t.text == "[") {
          auto e = node(Expr::Type::List, t.pos);
          while (!is_op("]")) {
            e->items.push_back(expression());
            if (!is_op(",")) break;
            ++at_;
          }
          expect_op("]", "to close '['");
          return e;
        }
        if (t.text == "{") {
          auto e = node(Expr::Type::Dict, t.pos);
          while (!is_op("}")) {
            e->items.push_back(expression());
            expect_op(":", "between a key and its value");
            e->items.push_back(expression());
            if (!is_op(",")) break;
            ++at_;
          }
          expect_op("}", "to close '{'");
          return e;
        }
        break;
      default: break;
    }
    fail_at(t.pos, "expected an expression, got ", describe(t));
  }

  // Counts one level of recursion while alive.
  class Nesting {
   public:
    Nesting(Parser& parser, size_t pos) : depth_(parser.depth_) {
      if (++depth_ > kMaxNesting) fail_at(pos, "nested more than ", kMaxNesting, " levels deep");
    }
    ~Nesting() { --depth_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    int& depth_;
  };

  std::vector<Token> tokens_;
  size_t at_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse(std::vector<Token> tokens) { return Parser(std::move(tokens)).program(); }

}  // namespace slm::jinja
