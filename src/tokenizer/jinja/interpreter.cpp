#include "tokenizer/jinja/interpreter.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/filters.h"
#include "tokenizer/jinja/strings.h"
#include "tokenizer/unicode.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <unordered_set>

namespace slm::jinja {

namespace {

std::string bounded(std::string text, size_t pos) {
  check_text(text.size(), pos);
  return text;
}

// Every binary operator but `and` and `or`, which eval() short-circuits.
Value binary(const std::string& op, const Value& a, const Value& b, size_t pos) {
  if (op == "==") return Value::of(equal(a, b));
  if (op == "!=") return Value::of(!equal(a, b));
  if (op == "in") return Value::of(contains(b, a, pos));
  if (op == "not in") return Value::of(!contains(b, a, pos));
  if (op == "~") return Value::of(bounded(to_string(a, pos) + to_string(b, pos), pos));
  if (op == "<") return Value::of(compare(a, b, pos) < 0);
  if (op == "<=") return Value::of(compare(a, b, pos) <= 0);
  if (op == ">") return Value::of(compare(a, b, pos) > 0);
  if (op == ">=") return Value::of(compare(a, b, pos) >= 0);
  if (a.kind == Kind::Undefined || b.kind == Kind::Undefined) {
    fail_at(pos, "'", op, "' on an undefined value");
  }
  if (op == "+") {
    if (a.kind == Kind::List && b.kind == Kind::List) {
      check_items(a.list->size() + b.list->size(), pos);
      Items items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return Value::of(std::move(items));
    }
    // @huggingface/jinja joins a string with anything; Python would fail. The
    // lenient choice never turns a working template into an error.
    if (a.kind == Kind::String || b.kind == Kind::String) return Value::of(bounded(to_string(a, pos) + to_string(b, pos), pos));
  }
  if (op == "*" && ((a.kind == Kind::String && b.kind == Kind::Int) || (a.kind == Kind::Int && b.kind == Kind::String))) {
    const Value& s = a.kind == Kind::String ? a : b;
    const int64_t times = a.kind == Kind::Int ? a.integer : b.integer;
    if (times > 0 && s.text().size() > kMaxText / static_cast<size_t>(times)) fail_at(pos, "a string of more than ", kMaxText >> 20, " MiB");
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += s.text();
    return Value::of(std::move(out));
  }
  const bool numbers = (a.is_number() || a.kind == Kind::Bool) && (b.is_number() || b.kind == Kind::Bool);
  if (!numbers) fail_at(pos, "'", op, "' between ", kind_name(a.kind), " and ", kind_name(b.kind));
  const bool integers = a.kind != Kind::Float && b.kind != Kind::Float;
  const double x = a.as_double(), y = b.as_double();
  const int64_t i = a.kind == Kind::Int ? a.integer : static_cast<int64_t>(a.boolean);
  const int64_t j = b.kind == Kind::Int ? b.integer : static_cast<int64_t>(b.boolean);
  // Integers are 64-bit here (Python's are unbounded): overflow is an error, never a wrapped value.
  int64_t r = 0;
  auto checked = [&](bool (*operation)(int64_t, int64_t, int64_t*)) {
    if (operation(i, j, &r)) fail_at(pos, "integer overflow");
    return Value::of(r);
  };
  if (op == "+") return integers ? checked([](int64_t p, int64_t q, int64_t* o) { return __builtin_add_overflow(p, q, o); }) : Value::of(x + y);
  if (op == "-") return integers ? checked([](int64_t p, int64_t q, int64_t* o) { return __builtin_sub_overflow(p, q, o); }) : Value::of(x - y);
  if (op == "*") return integers ? checked([](int64_t p, int64_t q, int64_t* o) { return __builtin_mul_overflow(p, q, o); }) : Value::of(x * y);
  if (op == "**") {
    if (!integers || j < 0) return Value::of(std::pow(x, y));
    r = 1;
    for (int64_t base = i, e = j; e > 0; e >>= 1) {  // by squaring: at most 64 rounds
      if ((e & 1) && __builtin_mul_overflow(r, base, &r)) fail_at(pos, "integer overflow");
      if (e > 1 && __builtin_mul_overflow(base, base, &base)) fail_at(pos, "integer overflow");
    }
    return Value::of(r);
  }
  if (y == 0) fail_at(pos, "division by zero");
  if (op == "/") return Value::of(x / y);
  if (integers && i == INT64_MIN && j == -1) fail_at(pos, "integer overflow");
  // // and % round toward negative infinity, as in Python.
  if (op == "//") {
    if (!integers) return Value::of(std::floor(x / y));
    const int64_t q = i / j;
    return Value::of(q - ((i % j != 0 && (i < 0) != (j < 0)) ? 1 : 0));
  }
  if (!integers) return Value::of(x - y * std::floor(x / y));
  const int64_t m = i % j;
  return Value::of(m != 0 && (m < 0) != (j < 0) ? m + j : m);
}

enum class Flow { Normal, Break, Continue };

class Interpreter {
 public:
  Interpreter() = default;
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;
  // Values are shared, so `{% set ns.self = ns %}` (or a namespace stored in
  // a list stored back in it) is a cycle of shared pointers that would never
  // be freed. Only an assignment to a namespace can close one, so emptying
  // every namespace assigned to once the render ends (or fails) frees them.
  ~Interpreter() {
    for (const auto& dict : assigned_) dict->items.clear();
  }

  Flow run(const Body& body, Scope& scope, std::string& out) {
    for (const auto& s : body) {
      Flow flow;
      try {
        flow = execute(*s, scope, out);
      } catch (TemplateError& error) {
        if (error.pos == kNoPosition) error.pos = s->pos;  // the innermost statement running
        throw;
      }
      if (out.size() > kMaxText) fail_at(s->pos, "the render grew past ", kMaxText >> 20, " MiB");
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

 private:
  Flow execute(const Stmt& s, Scope& scope, std::string& out) {
    switch (s.type) {
      case Stmt::Type::Text: out += s.text; return Flow::Normal;
      case Stmt::Type::Output: out += to_string(eval(*s.expr, scope), s.expr->pos); return Flow::Normal;
      case Stmt::Type::If: return run(truthy(eval(*s.expr, scope)) ? s.body : s.orelse, scope, out);
      case Stmt::Type::For: return execute_for(s, scope, out);
      case Stmt::Type::Set: execute_set(s, scope); return Flow::Normal;
      case Stmt::Type::Macro: scope.vars[s.text] = macro(s.text, s.params, s.body); return Flow::Normal;
      case Stmt::Type::CallBlock: {
        Scope with_caller{&scope, {}};
        with_caller.vars["caller"] = macro("caller", s.params, s.body);
        out += to_string(eval(*s.expr, with_caller), s.pos);
        return Flow::Normal;
      }
      case Stmt::Type::FilterBlock: {
        std::string text;
        run(s.body, scope, text);
        out += to_string(apply_filter(*s.expr, Value::of(std::move(text)), scope), s.pos);
        return Flow::Normal;
      }
      case Stmt::Type::Break: return Flow::Break;
      case Stmt::Type::Continue: return Flow::Continue;
      case Stmt::Type::Scope: return run(s.body, scope, out);
    }
    return Flow::Normal;
  }

  static void bind(Scope& scope, const std::vector<std::string>& names, const Value& item, size_t pos) {
    if (names.size() == 1) {
      scope.vars[names[0]] = item;
      return;
    }
    if (item.kind != Kind::List) fail_at(pos, "cannot unpack ", kind_name(item.kind), " into ", names.size(), " variables");
    if (item.list->size() != names.size()) {
      fail_at(pos, "cannot unpack ", item.list->size(), " values into ", names.size(), " variables");
    }
    for (size_t i = 0; i < names.size(); ++i) scope.vars[names[i]] = (*item.list)[i];
  }

  Flow execute_for(const Stmt& s, Scope& scope, std::string& out) {
    const Value iterable = eval(*s.expr, scope);
    spend(weight(iterable), s.expr->pos);
    std::vector<Value> items = iterate(iterable, s.expr->pos);
    Scope loop_scope{&scope, {}};
    if (s.condition) {
      std::vector<Value> kept;
      for (Value& item : items) {
        if (++iterations_ > kMaxIterations) fail_at(s.pos, "more than ", kMaxIterations, " loop iterations");
        bind(loop_scope, s.names, item, s.pos);
        if (truthy(eval(*s.condition, loop_scope))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++iterations_ > kMaxIterations) fail_at(s.pos, "more than ", kMaxIterations, " loop iterations");
      loop_scope.vars.clear();  // as in Jinja2, what one iteration sets the next does not see
      Dict loop;
      loop.items = {{"index", Value::of(i + 1)},
                    {"index0", Value::of(i)},
                    {"revindex", Value::of(n - i)},
                    {"revindex0", Value::of(n - i - 1)},
                    {"first", Value::of(i == 0)},
                    {"last", Value::of(i == n - 1)},
                    {"length", Value::of(n)},
                    {"previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value{}},
                    {"nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value{}}};
      loop_scope.vars["loop"] = make_dict(std::move(loop));
      bind(loop_scope, s.names, items[static_cast<size_t>(i)], s.pos);
      if (run(s.body, loop_scope, out) == Flow::Break) break;
    }
    if (items.empty()) {
      loop_scope.vars.clear();
      run(s.orelse, loop_scope, out);
    }
    return Flow::Normal;
  }

  void execute_set(const Stmt& s, Scope& scope) {
    Value value;
    if (s.expr) {
      value = eval(*s.expr, scope);
    } else {
      std::string text;
      run(s.body, scope, text);
      value = Value::of(std::move(text));
    }
    if (value.depth > static_cast<uint32_t>(kMaxNesting)) fail_at(s.pos, "a value nested more than ", kMaxNesting, " lists and dicts deep");
    if (!s.text.empty()) {
      const Value* target = scope.find(s.names[0]);
      if (!target || target->kind != Kind::Namespace) {
        fail_at(s.pos, "cannot set '", s.names[0], ".", s.text, "': '", s.names[0], "' is not a namespace()");
      }
      assigned_.insert(target->dict);
      target->dict->set(s.text, std::move(value));
      return;
    }
    bind(scope, s.names, value, s.pos);
  }

  // A macro runs in a scope whose parent is the caller's, as in @huggingface/jinja.
  Value macro(const std::string& name, const std::vector<Param>& params, const Body& body) {
    return Value::of(Callable([this, name, &params, &body](Args& args, Scope& caller, size_t pos) {
      if (macro_depth_ >= kMaxNesting) fail_at(pos, "macro '", name, "' nested more than ", kMaxNesting, " calls deep");
      ++macro_depth_;
      struct Leave {
        int& depth;
        ~Leave() { --depth; }
      } leave{macro_depth_};
      Scope local{&caller, {}};
      if (args.positional.size() > params.size()) {
        fail_at(pos, "macro '", name, "' takes at most ", params.size(), " arguments, got ", args.positional.size());
      }
      for (const auto& keyword : args.keyword) {
        const std::string& key = keyword.first;  // a named variable: clang 14 cannot capture a structured binding
        if (std::none_of(params.begin(), params.end(), [&](const Param& p) { return p.name == key; })) {
          fail_at(pos, "macro '", name, "' has no parameter '", key, "'");
        }
      }
      for (size_t i = 0; i < params.size(); ++i) {
        if (const Value* v = args.get(i, params[i].name)) local.vars[params[i].name] = *v;
        else if (params[i].default_value) local.vars[params[i].name] = eval(*params[i].default_value, local);
        else local.vars[params[i].name] = Value{};
      }
      std::string out;
      run(body, local, out);
      return Value::of(std::move(out));
    }));
  }

  Args evaluate(const CallArgs& call, Scope& scope) {
    Args args;
    for (const ExprPtr& e : call.positional) args.positional.push_back(eval(*e, scope));
    for (const auto& [key, e] : call.keyword) args.keyword.emplace_back(key, eval(*e, scope));
    return args;
  }

  Value eval(const Expr& e, Scope& scope) {
    spend(1, e.pos);
    switch (e.type) {
      case Expr::Type::Literal: return e.literal;
      case Expr::Type::Name: {
        const Value* v = scope.find(e.name);
        return v ? *v : Value{};
      }
      case Expr::Type::List: {
        Items items;
        for (const ExprPtr& item : e.items) items.push_back(eval(*item, scope));
        return e.tuple ? Value::tuple_of(std::move(items)) : Value::of(std::move(items));
      }
      case Expr::Type::Dict: {
        Dict d;
        for (size_t i = 0; i < e.items.size(); i += 2) {
          const Value key = eval(*e.items[i], scope);
          if (key.kind != Kind::String) fail_at(e.items[i]->pos, "dict keys must be strings, got ", kind_name(key.kind));
          d.set(key.text(), eval(*e.items[i + 1], scope));
        }
        return make_dict(std::move(d));
      }
      case Expr::Type::Attr: {
        const Value object = eval(*e.items[0], scope);
        if (object.kind == Kind::String) spend(weight(object), e.pos);  // a method binds a copy
        return attribute(object, e.name);
      }
      case Expr::Type::Index: return index(eval(*e.items[0], scope), eval(*e.items[1], scope), e.pos);
      case Expr::Type::Slice: return slice(e, scope);
      case Expr::Type::Call: {
        const Value callee = eval(*e.items[0], scope);
        Args args = evaluate(e.args, scope);
        if (callee.kind != Kind::Function) {
          const std::string what = e.items[0]->type == Expr::Type::Name   ? "'" + e.items[0]->name + "'"
                                   : e.items[0]->type == Expr::Type::Attr ? "'" + e.items[0]->name + "'"
                                                                          : "the value";
          if (callee.kind == Kind::Undefined) fail_at(e.pos, what, " is undefined and cannot be called");
          fail_at(e.pos, what, " is ", kind_name(callee.kind), ", not a function");
        }
        int64_t paid = 0;
        for (const Value& v : args.positional) paid += weight(v);
        for (const auto& keyword : args.keyword) paid += weight(keyword.second);
        Value result = (*callee.function)(args, scope, e.pos);
        spend(paid + weight(result), e.pos);
        return result;
      }
      case Expr::Type::Filter: return apply_filter(e, eval(*e.items[0], scope), scope);
      case Expr::Type::Test: {
        const Value operand = eval(*e.items[0], scope);
        Args args = evaluate(e.args, scope);
        return Value::of(run_test(e.name, operand, args, e.pos) != e.negate);
      }
      case Expr::Type::Unary: {
        const Value v = eval(*e.items[0], scope);
        if (e.name == "not") return Value::of(!truthy(v));
        if (v.kind == Kind::Int) {
          if (e.name == "-" && v.integer == INT64_MIN) fail_at(e.pos, "integer overflow");
          return Value::of(e.name == "-" ? -v.integer : v.integer);
        }
        if (v.kind == Kind::Float) return Value::of(e.name == "-" ? -v.number : v.number);
        if (v.kind == Kind::Bool) return Value::of(static_cast<int64_t>(e.name == "-" ? -v.boolean : v.boolean));
        fail_at(e.pos, "unary '", e.name, "' needs a number, got ", kind_name(v.kind));
      }
      case Expr::Type::And: {
        Value left = eval(*e.items[0], scope);
        return truthy(left) ? eval(*e.items[1], scope) : left;
      }
      case Expr::Type::Or: {
        Value left = eval(*e.items[0], scope);
        return truthy(left) ? left : eval(*e.items[1], scope);
      }
      case Expr::Type::Binary: {
        const Value a = eval(*e.items[0], scope), b = eval(*e.items[1], scope);
        Value result = binary(e.name, a, b, e.pos);
        spend(weight(a) + weight(b) + weight(result), e.pos);
        return result;
      }
      case Expr::Type::Ternary:
        return truthy(eval(*e.items[0], scope)) ? eval(*e.items[1], scope) : eval(*e.items[2], scope);
      case Expr::Type::Select: return truthy(eval(*e.items[0], scope)) ? eval(*e.items[1], scope) : Value{};
    }
    return Value{};
  }

  Value slice(const Expr& e, Scope& scope) {
    const Value object = eval(*e.items[0], scope);
    spend(2 * weight(object), e.pos);  // visited, and at most as much made
    std::optional<int64_t> bounds[3];
    for (int k = 0; k < 3; ++k) {
      if (!e.items[static_cast<size_t>(k + 1)]) continue;
      const Value v = eval(*e.items[static_cast<size_t>(k + 1)], scope);
      if (v.kind == Kind::None || v.kind == Kind::Undefined) continue;
      if (v.kind != Kind::Int) fail_at(e.pos, "slice bounds must be integers, got ", kind_name(v.kind));
      bounds[k] = v.integer;
    }
    const int64_t step = bounds[2].value_or(1);
    if (step == 0) fail_at(e.pos, "slice step cannot be zero");
    std::vector<Value> items;
    std::vector<char32_t> cps;
    int64_t n = 0;
    if (object.kind == Kind::List) n = static_cast<int64_t>(object.list->size());
    else if (object.kind == Kind::String) n = static_cast<int64_t>((cps = code_points(object.text())).size());
    else fail_at(e.pos, "cannot slice ", kind_name(object.kind));
    // Python's slice.indices.
    auto clamp = [&](std::optional<int64_t> b, int64_t absent) {
      if (!b) return absent;
      int64_t v = *b < 0 ? *b + n : *b;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], step > 0 ? n : -1);
    if (object.kind == Kind::List) {
      Items out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back((*object.list)[static_cast<size_t>(i)]);
      return Value::of(std::move(out));
    }
    std::vector<char32_t> out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(cps[static_cast<size_t>(i)]);
    return Value::of(from_code_points(out));
  }

  static Value index(const Value& object, const Value& key, size_t pos) {
    if (object.kind == Kind::Dict || object.kind == Kind::Namespace) {
      if (key.kind != Kind::String) return Value{};
      return attribute(object, key.text());
    }
    if (object.kind == Kind::List || object.kind == Kind::String) {
      if (key.kind == Kind::String) return attribute(object, key.text());
      if (key.kind != Kind::Int) fail_at(pos, kind_name(object.kind), " index must be an integer, got ", kind_name(key.kind));
      if (object.kind == Kind::List) {
        const auto n = static_cast<int64_t>(object.list->size());
        const int64_t i = key.integer < 0 ? key.integer + n : key.integer;
        return i >= 0 && i < n ? (*object.list)[static_cast<size_t>(i)] : Value{};
      }
      const std::vector<char32_t> cps = code_points(object.text());
      const auto n = static_cast<int64_t>(cps.size());
      const int64_t i = key.integer < 0 ? key.integer + n : key.integer;
      if (i < 0 || i >= n) return Value{};
      std::string c;
      tok::append_utf8(c, cps[static_cast<size_t>(i)]);
      return Value::of(std::move(c));
    }
    return Value{};  // an index of undefined or none is undefined, as in @huggingface/jinja
  }

  // obj.name: a key of a dict, else a method of the value, else undefined.
  static Value attribute(const Value& object, const std::string& name) {
    if (object.kind == Kind::Dict || object.kind == Kind::Namespace) {
      if (const Value* v = object.dict->find(name)) return *v;
      if (object.kind == Kind::Namespace) return Value{};
    }
    return method(object, name);
  }

  Value apply_filter(const Expr& f, const Value& operand, Scope& scope) {
    Args args = evaluate(f.args, scope);
    return filter(f.name, operand, args, f.pos);
  }

  int macro_depth_ = 0;
  int64_t iterations_ = 0;  // of every loop of this render, for kMaxIterations
  std::unordered_set<std::shared_ptr<Dict>> assigned_;  // the namespaces assigned to
};

}  // namespace

std::string render(const Body& body, Scope& globals) {
  struct Budget {
    int64_t saved = steps_left;
    Budget() { steps_left = kMaxSteps; }
    ~Budget() { steps_left = saved; }
  } budget;
  std::string out;
  Interpreter().run(body, globals, out);
  return out;
}

}  // namespace slm::jinja
