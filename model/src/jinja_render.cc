// Evaluating a parsed template: scopes, operators, attribute and item access
// as jinja2's sandbox does them, and the filters, tests, methods and globals
// chat templates use (jinja_builtins.cc).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "interlace/model/jinja.h"
#include "jinja_builtins.h"
#include "jinja_syntax.h"

namespace interlace::model::jinja {
namespace {

// Python's floor division and modulo, which round toward negative infinity.
int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

// What one rendering may cost: a chat template runs for every request a
// gateway answers, and a model directory's template is not ours. Past these
// it fails with an error instead of hanging, overflowing the stack or
// exhausting memory.
constexpr int64_t kMaxSteps = 1'000'000;          // statements and loop iterations (a chat template takes thousands)
constexpr int kMaxCallDepth = 64;                 // macros calling macros

void check_size(size_t bytes, int line) {
  if (bytes > kMaxStringBytes) fail(line, absl::StrCat("a string of ", bytes, " bytes: over the ", kMaxStringBytes, "-byte limit"));
}

class Renderer {
 public:
  explicit Renderer(const Program& program) : program_(program) {}

  std::string render(const nlohmann::ordered_json& context) {
    auto globals = std::make_shared<Dict>();
    add_globals(*globals);
    if (context.is_object())
      for (const auto& [k, v] : context.items()) globals->set(k, Value::from_json(v));
    frames_.push_back(globals);
    std::string out;
    run(program_.body, out);
    return out;
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Value lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it)
      if (const Value* v = (*it)->find(name)) return *v;
    return Value::undefined(absl::StrCat("'", name, "' is undefined"));
  }
  void assign(const std::string& name, Value v) { frames_.back()->set(name, std::move(v)); }

  void assign_targets(const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) return assign(targets[0], v);
    if (!v.is_list() || v.list->size() != targets.size())
      fail(line, absl::StrCat("cannot unpack a ", v.type_name(), " into ", targets.size(), " names"));
    for (size_t i = 0; i < targets.size(); ++i) assign(targets[i], (*v.list)[i]);
  }

  Flow run(const Body& body, std::string& out) {
    for (const auto& s : body)
      if (Flow f = run(*s, out); f != Flow::kNormal) return f;
    return Flow::kNormal;
  }

  void count_step(int line) {
    if (++steps_ > kMaxSteps) fail(line, absl::StrCat("the template ran past its limit of ", kMaxSteps, " steps"));
  }

  Flow run(const Stmt& s, std::string& out) {
    count_step(s.line);
    check_size(out.size(), s.line);
    switch (s.kind) {
      case Stmt::Kind::kText: out += s.text; return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        const Value v = eval(*s.expr);
        out += str(v, s.line);
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (size_t b = 0; b < s.conditions.size(); ++b)
          if (eval(*s.conditions[b]).truthy()) return run(s.bodies[b], out);
        if (s.bodies.size() > s.conditions.size()) return run(s.bodies.back(), out);
        return Flow::kNormal;
      case Stmt::Kind::kFor: return run_for(s, out);
      case Stmt::Kind::kSet: {
        Value v = eval(*s.expr);
        if (s.attribute.empty()) {
          assign_targets(s.targets, v, s.line);
        } else {
          Value ns = lookup(s.targets[0]);
          if (!ns.is_dict() || !ns.is_namespace)
            fail(s.line, absl::StrCat("cannot set '", s.attribute, "' on ", s.targets[0], ", which is not a namespace()"));
          ns.dict->set(s.attribute, std::move(v));
        }
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        std::string captured;
        run(s.bodies[0], captured);
        assign(s.targets[0], Value::from(std::move(captured)));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro: assign(s.name, make_macro(s)); return Flow::kNormal;
      case Stmt::Kind::kBreak: return Flow::kBreak;
      case Stmt::Kind::kContinue: return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  Flow run_for(const Stmt& s, std::string& out) {
    List items = iterate(eval(*s.expr), s.line);
    if (s.filter) {  // "for x in xs if cond": the loop sees only what passes
      List kept;
      for (const Value& item : items) {
        frames_.push_back(std::make_shared<Dict>());
        assign_targets(s.targets, item, s.line);
        const bool pass = eval(*s.filter).truthy();
        frames_.pop_back();
        if (pass) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (s.bodies.size() > 1) return run(s.bodies[1], out);
      return Flow::kNormal;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      // Each iteration has its own scope: what it sets is gone in the next one.
      frames_.push_back(std::make_shared<Dict>());
      assign_targets(s.targets, items[size_t(i)], s.line);
      Dict loop;
      loop.set("index0", Value::from(i));
      loop.set("index", Value::from(i + 1));
      loop.set("revindex0", Value::from(n - i - 1));
      loop.set("revindex", Value::from(n - i));
      loop.set("first", Value::from(i == 0));
      loop.set("last", Value::from(i == n - 1));
      loop.set("length", Value::from(n));
      loop.set("depth", Value::from(int64_t{1}));
      loop.set("depth0", Value::from(int64_t{0}));
      loop.set("previtem", i > 0 ? items[size_t(i - 1)] : Value::undefined("there is no loop.previtem in the first iteration"));
      loop.set("nextitem", i + 1 < n ? items[size_t(i + 1)] : Value::undefined("there is no loop.nextitem in the last iteration"));
      loop.set("cycle", Value::from(Function([i](Args& a) {
                 if (a.positional.empty()) fail(a.line, "loop.cycle needs at least one value");
                 return a.positional[size_t(i) % a.positional.size()];
               })));
      assign("loop", Value::from(std::move(loop)));
      count_step(s.line);
      const Flow f = run(s.bodies[0], out);
      frames_.pop_back();
      if (f == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value make_macro(const Stmt& s) {
    const Stmt* def = &s;
    return Value::from(Function([this, def](Args& a) {
      if (a.positional.size() > def->params.size())
        fail(a.line, absl::StrCat("macro ", def->name, " takes ", def->params.size(), " arguments, ", a.positional.size(), " given"));
      auto frame = std::make_shared<Dict>();
      for (size_t p = 0; p < def->params.size(); ++p) {
        Value v = a.get(p, def->params[p]);
        if (v.is_undefined() && def->defaults[p]) v = eval(*def->defaults[p]);
        frame->set(def->params[p], v.is_undefined() ? Value::undefined(absl::StrCat("'", def->params[p], "' is undefined")) : v);
      }
      for (const auto& [k, v] : a.keyword)
        if (std::find(def->params.begin(), def->params.end(), k) == def->params.end())
          fail(a.line, absl::StrCat("macro ", def->name, " has no parameter '", k, "'"));
      // A macro sees the template's globals and its own arguments.
      std::vector<std::shared_ptr<Dict>> saved = {frames_.begin() + 1, frames_.end()};
      frames_.resize(1);
      frames_.push_back(frame);
      if (++depth_ > kMaxCallDepth) fail(a.line, absl::StrCat("macros nested more than ", kMaxCallDepth, " deep (endless recursion?)"));
      std::string out;
      run(def->bodies[0], out);
      --depth_;
      frames_.resize(1);
      frames_.insert(frames_.end(), saved.begin(), saved.end());
      return Value::from(std::move(out));
    }));
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.literal;
      case Expr::Kind::kName: return lookup(e.name);
      case Expr::Kind::kList: {
        List l;
        for (const auto& o : e.operands) l.push_back(eval(*o));
        return Value::from(std::move(l));
      }
      case Expr::Kind::kDict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.operands.size(); i += 2) {
          const Value k = eval(*e.operands[i]);
          if (!k.is_string()) fail(e.line, "dictionary keys must be strings here");
          d.set(k.string, eval(*e.operands[i + 1]));
        }
        return Value::from(std::move(d));
      }
      case Expr::Kind::kAttr: return get_attribute(eval(*e.operands[0]), e.name, e.line);
      case Expr::Kind::kItem: return get_item(eval(*e.operands[0]), eval(*e.operands[1]), e.line);
      case Expr::Kind::kSlice: {
        const Value subject = eval(*e.operands[0]);
        Value parts[3];
        for (int p = 0; p < 3; ++p)
          if (e.operands[size_t(p) + 1]) parts[p] = eval(*e.operands[size_t(p) + 1]);
        return slice(subject, parts[0], parts[1], parts[2], e.line);
      }
      case Expr::Kind::kCall: {
        const Value callee = eval(*e.operands[0]);
        if (callee.is_undefined()) fail_undefined(callee, e.line);
        if (callee.kind != Value::Kind::kFunction) fail(e.line, absl::StrCat("a ", callee.type_name(), " is not callable"));
        Args a = arguments(e, 1);
        return (*callee.function)(a);
      }
      case Expr::Kind::kFilter: {
        Args a = arguments(e, 1);
        a.positional.insert(a.positional.begin(), eval(*e.operands[0]));
        a.callee = absl::StrCat("filter '", e.name, "'");
        return apply_filter(e.name, a, [this](const std::string& test, Args& args) { return apply_test(test, args); });
      }
      case Expr::Kind::kTest: {
        Args a = arguments(e, 1);
        a.positional.insert(a.positional.begin(), eval(*e.operands[0]));
        a.callee = absl::StrCat("test '", e.name, "'");
        return Value::from(apply_test(e.name, a) != e.negated);
      }
      case Expr::Kind::kUnary: {
        const Value v = eval(*e.operands[0]);
        if (e.name == "not") return Value::from(!v.truthy());
        if (v.is_undefined()) fail_undefined(v, e.line);
        if (!v.is_number()) fail(e.line, absl::StrCat("bad operand type for unary ", e.name, ": '", v.type_name(), "'"));
        if (e.name == "+") return v.kind == Value::Kind::kBool ? Value::from(as_int(v)) : v;
        return v.kind == Value::Kind::kFloat ? Value::from(-v.real) : Value::from(-as_int(v));
      }
      case Expr::Kind::kBinary: {
        if (e.name == "and") {
          Value l = eval(*e.operands[0]);
          return l.truthy() ? eval(*e.operands[1]) : l;
        }
        if (e.name == "or") {
          Value l = eval(*e.operands[0]);
          return l.truthy() ? l : eval(*e.operands[1]);
        }
        return arithmetic(e.name, eval(*e.operands[0]), eval(*e.operands[1]), e.line);
      }
      case Expr::Kind::kCompare: {
        Value left = eval(*e.operands[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.operands[i + 1]);
          if (!compare_op(e.ops[i], left, right, e.line)) return Value::from(false);
          left = std::move(right);
        }
        return Value::from(true);
      }
      case Expr::Kind::kCond:
        if (eval(*e.operands[1]).truthy()) return eval(*e.operands[0]);
        return e.operands[2] ? eval(*e.operands[2]) : Value::undefined("the inline if had no else");
    }
    fail(e.line, "unknown expression");
  }

  Args arguments(const Expr& e, size_t first) {
    Args a;
    a.line = e.line;
    a.callee = e.name.empty() ? "the function" : e.name;
    const size_t keyword_start = e.operands.size() - e.keywords.size();
    for (size_t i = first; i < keyword_start; ++i) a.positional.push_back(eval(*e.operands[i]));
    for (size_t i = keyword_start; i < e.operands.size(); ++i)
      a.keyword.emplace_back(e.keywords[i - keyword_start], eval(*e.operands[i]));
    return a;
  }

  bool compare_op(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return equal(a, b);
    if (op == "!=") return !equal(a, b);
    if (op == "in" || op == "not in") return contains(b, a, line) == (op == "in");
    if (a.is_undefined()) fail_undefined(a, line);
    if (b.is_undefined()) fail_undefined(b, line);
    const int c = compare(a, b, line);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  Value arithmetic(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "~") {
      std::string joined = str(a, line);
      const std::string right = str(b, line);
      check_size(joined.size() + right.size(), line);
      return Value::from(joined + right);
    }
    if (a.is_undefined()) fail_undefined(a, line);
    if (b.is_undefined()) fail_undefined(b, line);
    auto unsupported = [&]() {
      fail(line, absl::StrCat("unsupported operand types for ", op, ": '", a.type_name(), "' and '", b.type_name(), "'"));
    };
    if (a.is_number() && b.is_number()) {
      const bool ints = is_int_like(a) && is_int_like(b);
      const double x = a.as_double(), y = b.as_double();
      if (op == "+") return ints ? Value::from(as_int(a) + as_int(b)) : Value::from(x + y);
      if (op == "-") return ints ? Value::from(as_int(a) - as_int(b)) : Value::from(x - y);
      if (op == "*") return ints ? Value::from(as_int(a) * as_int(b)) : Value::from(x * y);
      if (op == "**") {
        if (ints && as_int(b) >= 0) {
          int64_t r = 1;
          for (int64_t k = 0; k < as_int(b); ++k) r *= as_int(a);
          return Value::from(r);
        }
        return Value::from(std::pow(x, y));
      }
      if (y == 0) fail(line, "division by zero");
      if (op == "/") return Value::from(x / y);
      if (op == "//") return ints ? Value::from(floor_div(as_int(a), as_int(b))) : Value::from(std::floor(x / y));
      if (op == "%") return ints ? Value::from(floor_mod(as_int(a), as_int(b))) : Value::from(x - std::floor(x / y) * y);
    }
    if (op == "+" && a.is_string() && b.is_string()) {
      check_size(a.string.size() + b.string.size(), line);
      return Value::from(a.string + b.string);
    }
    if (op == "+" && a.is_list() && b.is_list()) {
      List l = *a.list;
      l.insert(l.end(), b.list->begin(), b.list->end());
      return Value::from(std::move(l));
    }
    if (op == "*" && (a.is_string() || a.is_list()) && is_int_like(b)) {
      const size_t unit = a.is_string() ? a.string.size() : a.list->size() * sizeof(Value);
      if (as_int(b) > 0 && unit > 0 && size_t(as_int(b)) > kMaxStringBytes / unit)
        fail(line, absl::StrCat("repeating ", a.type_name(), " ", as_int(b), " times: over the ", kMaxStringBytes, "-byte limit"));
      if (a.is_string()) {
        std::string s;
        for (int64_t k = 0; k < as_int(b); ++k) s += a.string;
        return Value::from(std::move(s));
      }
      List l;
      for (int64_t k = 0; k < as_int(b); ++k) l.insert(l.end(), a.list->begin(), a.list->end());
      return Value::from(std::move(l));
    }
    if (op == "%" && a.is_string()) fail(line, "printf-style string formatting (%) is not supported; use ~ or format");
    unsupported();
  }

  const Program& program_;
  std::vector<std::shared_ptr<Dict>> frames_;
  int64_t steps_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<Template> Template::parse(std::string_view source, std::string name) {
  try {
    Template t;
    t.program_ = parse_program(source, name);
    return t;
  } catch (const Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, " line ", e.line, ": ", e.message));
  }
}

absl::StatusOr<std::string> Template::render(const nlohmann::ordered_json& context) const {
  try {
    return Renderer(*program_).render(context);
  } catch (const Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(program_->name, " line ", e.line, ": ", e.message));
  }
}

}  // namespace interlace::model::jinja
