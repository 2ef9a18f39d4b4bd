#include "jinja_syntax.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace interlace::model::jinja {
namespace {

// ---- Lexer -------------------------------------------------------------

struct Token {
  enum class Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kInt, kFloat, kString, kOp, kEnd };
  Type type = Type::kEnd;
  std::string text;  // text, name, operator or the string literal's value
  int64_t integer = 0;
  double real = 0;
  int line = 0;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string rstrip(std::string_view s) {
  size_t n = s.size();
  while (n > 0 && is_space(s[n - 1])) --n;
  return std::string(s.substr(0, n));
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(source) {
    // keep_trailing_newline=False: a final newline is not part of the output.
    if (src_.ends_with("\r\n")) src_.remove_suffix(2);
    else if (src_.ends_with("\n")) src_.remove_suffix(1);
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = next_tag(pos_);
      std::string text(src_.substr(pos_, tag - pos_));
      const int text_line = line_;
      const bool line_starting = pos_ == 0 || src_[pos_ - 1] == '\n';
      if (strip_next_) {  // the previous tag ended with "-"
        size_t n = 0;
        while (n < text.size() && is_space(text[n])) ++n;
        text.erase(0, n);
        strip_next_ = false;
      }
      if (tag < src_.size()) {
        const char kind = src_[tag + 1];
        const char sign = tag + 2 < src_.size() ? src_[tag + 2] : 0;
        if (sign == '-') {
          text = rstrip(text);
        } else if (sign != '+' && kind != '{') {
          // lstrip_blocks: a block or comment tag alone on its line takes the
          // indentation before it away.
          const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
          if (line_start > 0 || line_starting) {
            bool blank = line_start < text.size();
            for (size_t i = line_start; i < text.size(); ++i) blank = blank && is_space(text[i]);
            if (blank) text.erase(line_start);
          }
        }
      }
      if (!text.empty()) tokens_.push_back({Token::Type::kText, text, 0, 0, text_line});
      count_lines(pos_, tag);
      pos_ = tag;
      if (pos_ >= src_.size()) break;
      const char kind = src_[pos_ + 1];
      if (kind == '#') comment();
      else tag_tokens(kind == '{');
    }
    tokens_.push_back({Token::Type::kEnd, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  size_t next_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return src_.size();
  }
  void count_lines(size_t from, size_t to) {
    for (size_t i = from; i < to && i < src_.size(); ++i) line_ += src_[i] == '\n';
  }
  // After a tag: "-" strips what follows; a block's or comment's plain end
  // takes one newline with it (trim_blocks).
  void after_tag_end(char sign, bool block) {
    if (sign == '-') strip_next_ = true;
    else if (sign != '+' && block && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      ++line_;
    }
  }

  void comment() {
    const size_t end = src_.find("#}", pos_ + 2);
    if (end == std::string_view::npos) fail(line_, "a comment ({#) is never closed (#})");
    const char sign = src_[end - 1] == '-' || src_[end - 1] == '+' ? src_[end - 1] : 0;
    count_lines(pos_, end + 2);
    pos_ = end + 2;
    after_tag_end(sign, true);
  }

  void tag_tokens(bool variable) {
    const int begin_line = line_;
    tokens_.push_back({variable ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", 0, 0, line_});
    pos_ += 2;
    if (pos_ < src_.size() && (src_[pos_] == '-' || src_[pos_] == '+')) ++pos_;
    const char* close = variable ? "}}" : "%}";
    const size_t first_token = tokens_.size();
    int depth = 0;  // open brackets: "}}" inside {'a': {}} does not end the tag
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_])) line_ += src_[pos_++] == '\n';
      if (pos_ >= src_.size()) fail(begin_line, absl::StrCat("a tag opened here is never closed (", close, ")"));
      const std::string_view rest = src_.substr(pos_);
      char sign = 0;
      if ((rest[0] == '-' || rest[0] == '+') && rest.substr(1).starts_with(close)) sign = rest[0];
      if (depth == 0 && (sign || rest.starts_with(close))) {
        pos_ += sign ? 3 : 2;
        tokens_.push_back({variable ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", 0, 0, line_});
        after_tag_end(sign, !variable);
        break;
      }
      tokens_.push_back(expression_token());
      const Token& t = tokens_.back();
      if (t.type == Token::Type::kOp && (t.text == "(" || t.text == "[" || t.text == "{")) ++depth;
      if (t.type == Token::Type::kOp && (t.text == ")" || t.text == "]" || t.text == "}")) depth = std::max(0, depth - 1);
    }
    // {% raw %}: everything up to {% endraw %} is text.
    if (!variable && tokens_.size() == first_token + 2 && tokens_[first_token].text == "raw") {
      tokens_.resize(first_token - 1);
      raw_text();
    }
  }

  void raw_text() {
    for (size_t at = pos_; (at = src_.find("{%", at)) != std::string_view::npos; at += 2) {
      size_t p = at + 2;
      const char open_sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (open_sign) ++p;
      while (p < src_.size() && is_space(src_[p])) ++p;
      if (src_.substr(p, 6) != "endraw") continue;
      p += 6;
      while (p < src_.size() && is_space(src_[p])) ++p;
      const char close_sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (close_sign) ++p;
      if (src_.substr(p, 2) != "%}") continue;
      std::string text(src_.substr(pos_, at - pos_));
      if (strip_next_) {
        size_t n = 0;
        while (n < text.size() && is_space(text[n])) ++n;
        text.erase(0, n);
        strip_next_ = false;
      }
      if (open_sign == '-') text = rstrip(text);
      if (!text.empty()) tokens_.push_back({Token::Type::kText, text, 0, 0, line_});
      count_lines(pos_, p + 2);
      pos_ = p + 2;
      after_tag_end(close_sign, true);
      return;
    }
    fail(line_, "{% raw %} is never closed ({% endraw %})");
  }

  Token expression_token() {
    const std::string_view rest = src_.substr(pos_);
    const char c = rest[0];
    Token t;
    t.line = line_;
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t n = 1;
      while (n < rest.size() && (std::isalnum(static_cast<unsigned char>(rest[n])) || rest[n] == '_')) ++n;
      t.type = Token::Type::kName;
      t.text = std::string(rest.substr(0, n));
      pos_ += n;
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t n = 0;
      bool real = false;
      while (n < rest.size() && (std::isdigit(static_cast<unsigned char>(rest[n])) || rest[n] == '_')) ++n;
      if (n + 1 < rest.size() && rest[n] == '.' && std::isdigit(static_cast<unsigned char>(rest[n + 1]))) {
        real = true;
        ++n;
        while (n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]))) ++n;
      }
      if (n < rest.size() && (rest[n] == 'e' || rest[n] == 'E')) {
        size_t m = n + 1;
        if (m < rest.size() && (rest[m] == '+' || rest[m] == '-')) ++m;
        if (m < rest.size() && std::isdigit(static_cast<unsigned char>(rest[m]))) {
          real = true;
          n = m;
          while (n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]))) ++n;
        }
      }
      std::string digits;
      for (char d : rest.substr(0, n))
        if (d != '_') digits += d;
      t.type = real ? Token::Type::kFloat : Token::Type::kInt;
      if (real) t.real = std::stod(digits);
      else t.integer = std::stoll(digits);
      t.text = digits;
      pos_ += n;
      return t;
    }
    if (c == '\'' || c == '"') return string_token(c);
    for (const char* op : {"//", "**", "==", "!=", "<=", ">="})
      if (rest.starts_with(op)) {
        pos_ += 2;
        return {Token::Type::kOp, op, 0, 0, line_};
      }
    if (std::strchr("+-*/%~<>=()[]{},.:|", c)) {
      ++pos_;
      return {Token::Type::kOp, std::string(1, c), 0, 0, line_};
    }
    fail(line_, absl::StrCat("unexpected character '", std::string(1, c), "' in a tag"));
  }

  // A Python string literal: backslash escapes as Python reads them.
  Token string_token(char quote) {
    Token t{Token::Type::kString, "", 0, 0, line_};
    size_t i = pos_ + 1;
    while (true) {
      if (i >= src_.size()) fail(t.line, "a string literal is never closed");
      const char c = src_[i];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\' || i + 1 >= src_.size()) {
        t.text += c;
        ++i;
        continue;
      }
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n': t.text += '\n'; break;
        case 't': t.text += '\t'; break;
        case 'r': t.text += '\r'; break;
        case '0': t.text += '\0'; break;
        case 'a': t.text += '\a'; break;
        case 'b': t.text += '\b'; break;
        case 'f': t.text += '\f'; break;
        case 'v': t.text += '\v'; break;
        case '\\': t.text += '\\'; break;
        case '\'': t.text += '\''; break;
        case '"': t.text += '"'; break;
        case '\n': ++line_; break;  // a continued line
        case 'x':
        case 'u':
        case 'U': {
          const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + digits > src_.size()) fail(t.line, "a \\x, \\u or \\U escape is cut short");
          append_utf8(t.text, static_cast<char32_t>(std::stoul(std::string(src_.substr(i, digits)), nullptr, 16)));
          i += digits;
          break;
        }
        default: t.text += '\\'; t.text += e;  // Python keeps unknown escapes
      }
    }
    pos_ = i + 1;
    return t;
  }

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool strip_next_ = false;
  std::vector<Token> tokens_;
};

// ---- Parser ------------------------------------------------------------

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body program() {
    std::string ended_by;
    Body body = parse_body({}, ended_by);
    return body;
  }

 private:
  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t n = 1) const { return t_[std::min(i_ + n, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Token::Type::kOp && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Token::Type::kName && cur().text == name; }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(cur().line, absl::StrCat("expected '", op, "', found ", describe(cur())));
    ++i_;
  }
  std::string expect_name() {
    if (cur().type != Token::Type::kName) fail(cur().line, absl::StrCat("expected a name, found ", describe(cur())));
    return t_[i_++].text;
  }
  void expect_block_end() {
    if (cur().type != Token::Type::kBlockEnd) fail(cur().line, absl::StrCat("expected the end of the tag (%}), found ", describe(cur())));
    ++i_;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::Type::kBlockEnd: return "'%}'";
      case Token::Type::kVarEnd: return "'}}'";
      case Token::Type::kEnd: return "the end of the template";
      case Token::Type::kString: return "a string";
      default: return absl::StrCat("'", t.text, "'");
    }
  }

  // Statements until one of END_TAGS (its name is returned in ENDED_BY, the tag's name consumed).
  Body parse_body(const std::set<std::string>& end_tags, std::string& ended_by) {
    Body body;
    while (true) {
      const Token& tok = cur();
      if (tok.type == Token::Type::kEnd) {
        if (!end_tags.empty())
          fail(tok.line, absl::StrCat("the template ends inside a block; expected one of: ", absl::StrJoin(end_tags, ", ")));
        return body;
      }
      if (tok.type == Token::Type::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->line = tok.line;
        s->text = tok.text;
        body.push_back(std::move(s));
        ++i_;
        continue;
      }
      if (tok.type == Token::Type::kVarBegin) {
        ++i_;
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = tok.line;
        s->expr = expression();
        if (cur().type != Token::Type::kVarEnd) fail(cur().line, absl::StrCat("expected '}}', found ", describe(cur())));
        ++i_;
        body.push_back(std::move(s));
        continue;
      }
      // A block tag.
      ++i_;
      const int line = cur().line;
      const std::string name = expect_name();
      if (end_tags.contains(name)) {
        ended_by = name;
        return body;
      }
      body.push_back(statement(name, line));
    }
  }

  std::unique_ptr<Stmt> statement(const std::string& name, int line) {
    Nesting guard(this, line);
    auto s = std::make_unique<Stmt>();
    s->line = line;
    std::string ended_by;
    if (name == "if") {
      s->kind = Stmt::Kind::kIf;
      s->conditions.push_back(expression());
      expect_block_end();
      while (true) {
        s->bodies.push_back(parse_body({"elif", "else", "endif"}, ended_by));
        if (ended_by == "elif") {
          s->conditions.push_back(expression());
          expect_block_end();
          continue;
        }
        if (ended_by == "else") {
          expect_block_end();
          s->bodies.push_back(parse_body({"endif"}, ended_by));
        }
        expect_block_end();
        return s;
      }
    }
    if (name == "for") {
      s->kind = Stmt::Kind::kFor;
      s->targets = target_names();
      if (!is_name("in")) fail(cur().line, absl::StrCat("expected 'in' in the for loop, found ", describe(cur())));
      ++i_;
      s->expr = or_expr();
      if (is_name("if")) {
        ++i_;
        s->filter = expression();
      }
      if (is_name("recursive")) fail(cur().line, "recursive for loops are not supported");
      expect_block_end();
      s->bodies.push_back(parse_body({"else", "endfor"}, ended_by));
      if (ended_by == "else") {
        expect_block_end();
        s->bodies.push_back(parse_body({"endfor"}, ended_by));
      }
      expect_block_end();
      return s;
    }
    if (name == "set") {
      s->targets = target_names();
      if (s->targets.size() == 1 && is_op(".")) {
        ++i_;
        s->attribute = expect_name();
      }
      if (cur().type == Token::Type::kBlockEnd) {
        if (s->targets.size() != 1 || !s->attribute.empty()) fail(line, "a block set assigns one plain name");
        s->kind = Stmt::Kind::kSetBlock;
        ++i_;
        s->bodies.push_back(parse_body({"endset"}, ended_by));
        expect_block_end();
        return s;
      }
      s->kind = Stmt::Kind::kSet;
      expect_op("=");
      s->expr = tuple_or_expression();
      expect_block_end();
      return s;
    }
    if (name == "macro") {
      s->kind = Stmt::Kind::kMacro;
      s->name = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        s->params.push_back(expect_name());
        if (is_op("=")) {
          ++i_;
          s->defaults.push_back(expression());
        } else {
          s->defaults.push_back(nullptr);
        }
        if (!is_op(")")) expect_op(",");
      }
      ++i_;
      expect_block_end();
      s->bodies.push_back(parse_body({"endmacro"}, ended_by));
      if (cur().type == Token::Type::kName) ++i_;  // {% endmacro name %}
      expect_block_end();
      return s;
    }
    if (name == "break" || name == "continue") {
      s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      expect_block_end();
      return s;
    }
    fail(line, absl::StrCat("the statement {% ", name, " %} is not supported by this interpreter"));
  }

  std::vector<std::string> target_names() {
    std::vector<std::string> names;
    const bool parenthesized = is_op("(");
    if (parenthesized) ++i_;
    names.push_back(expect_name());
    while (is_op(",")) {
      ++i_;
      names.push_back(expect_name());
    }
    if (parenthesized) expect_op(")");
    return names;
  }

  // "a, b" without brackets (set x = 1, 2) is a tuple, a list here.
  ExprPtr tuple_or_expression() {
    ExprPtr first = expression();
    if (!is_op(",")) return first;
    auto list = node(Expr::Kind::kList, first->line);
    list->operands.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      list->operands.push_back(expression());
    }
    return list;
  }

  ExprPtr node(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // The precedence ladder of jinja2's parser, lowest first.
  ExprPtr expression() {
    ExprPtr e = or_expr();
    while (is_name("if")) {
      auto c = node(Expr::Kind::kCond, cur().line);
      ++i_;
      c->operands.push_back(std::move(e));
      c->operands.push_back(or_expr());
      if (is_name("else")) {
        ++i_;
        c->operands.push_back(expression());
      } else {
        c->operands.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }
  ExprPtr binary(ExprPtr left, const std::string& op, ExprPtr right) {
    auto b = node(Expr::Kind::kBinary, left->line);
    b->name = op;
    b->operands.push_back(std::move(left));
    b->operands.push_back(std::move(right));
    return b;
  }
  ExprPtr or_expr() {
    ExprPtr e = and_expr();
    while (is_name("or")) {
      ++i_;
      e = binary(std::move(e), "or", and_expr());
    }
    return e;
  }
  ExprPtr and_expr() {
    ExprPtr e = not_expr();
    while (is_name("and")) {
      ++i_;
      e = binary(std::move(e), "and", not_expr());
    }
    return e;
  }
  ExprPtr not_expr() {
    if (!is_name("not")) return compare();
    auto n = node(Expr::Kind::kUnary, cur().line);
    ++i_;
    n->name = "not";
    n->operands.push_back(not_expr());
    return n;
  }
  ExprPtr compare() {
    ExprPtr first = math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Token::Type::kOp &&
          (is_op("==") || is_op("!=") || is_op("<") || is_op("<=") || is_op(">") || is_op(">="))) {
        op = cur().text;
        ++i_;
      } else if (is_name("in")) {
        op = "in";
        ++i_;
      } else if (is_name("not") && peek().type == Token::Type::kName && peek().text == "in") {
        op = "not in";
        i_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::Kind::kCompare, first->line);
        cmp->operands.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->operands.push_back(math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr math1() {
    ExprPtr e = concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = t_[i_++].text;
      e = binary(std::move(e), op, concat());
    }
    return e;
  }
  ExprPtr concat() {
    ExprPtr e = math2();
    while (is_op("~")) {
      ++i_;
      e = binary(std::move(e), "~", math2());
    }
    return e;
  }
  ExprPtr math2() {
    ExprPtr e = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = t_[i_++].text;
      e = binary(std::move(e), op, power());
    }
    return e;
  }
  ExprPtr power() {
    ExprPtr e = unary(true);
    while (is_op("**")) {
      ++i_;
      e = binary(std::move(e), "**", unary(true));
    }
    return e;
  }
  // Expressions and blocks nest by recursion: a bound keeps a hostile
  // template from overflowing the stack.
  struct Nesting {
    Parser* p;
    explicit Nesting(Parser* parser, int line) : p(parser) {
      if (++p->depth_ > kMaxNesting) fail(line, absl::StrCat("nested more than ", kMaxNesting, " deep"));
    }
    ~Nesting() { --p->depth_; }
  };
  static constexpr int kMaxNesting = 200;

  ExprPtr unary(bool with_filter) {
    Nesting guard(this, cur().line);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = node(Expr::Kind::kUnary, cur().line);
      e->name = t_[i_++].text;
      e->operands.push_back(unary(false));
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    if (with_filter) e = filters_and_tests(std::move(e));
    return e;
  }

  ExprPtr primary() {
    const Token& tok = cur();
    auto lit = [&](Value v) {
      auto e = node(Expr::Kind::kLiteral, tok.line);
      e->literal = std::move(v);
      ++i_;
      return e;
    };
    switch (tok.type) {
      case Token::Type::kName:
        if (tok.text == "true" || tok.text == "True") return lit(Value::from(true));
        if (tok.text == "false" || tok.text == "False") return lit(Value::from(false));
        if (tok.text == "none" || tok.text == "None") return lit(Value::none());
        {
          auto e = node(Expr::Kind::kName, tok.line);
          e->name = tok.text;
          ++i_;
          return e;
        }
      case Token::Type::kInt: return lit(Value::from(tok.integer));
      case Token::Type::kFloat: return lit(Value::from(tok.real));
      case Token::Type::kString: {
        std::string s;
        const int line = tok.line;
        while (cur().type == Token::Type::kString) s += t_[i_++].text;  // "a" "b" is "ab"
        auto e = node(Expr::Kind::kLiteral, line);
        e->literal = Value::from(std::move(s));
        return e;
      }
      case Token::Type::kOp:
        if (tok.text == "(") {
          ++i_;
          if (is_op(")")) {  // the empty tuple
            ++i_;
            return node(Expr::Kind::kList, tok.line);
          }
          ExprPtr e = expression();
          if (is_op(",")) {
            auto list = node(Expr::Kind::kList, e->line);
            list->operands.push_back(std::move(e));
            while (is_op(",")) {
              ++i_;
              if (is_op(")")) break;
              list->operands.push_back(expression());
            }
            e = std::move(list);
          }
          expect_op(")");
          return e;
        }
        if (tok.text == "[") {
          auto list = node(Expr::Kind::kList, tok.line);
          ++i_;
          while (!is_op("]")) {
            list->operands.push_back(expression());
            if (!is_op("]")) expect_op(",");
          }
          ++i_;
          return list;
        }
        if (tok.text == "{") {
          auto dict = node(Expr::Kind::kDict, tok.line);
          ++i_;
          while (!is_op("}")) {
            dict->operands.push_back(expression());
            expect_op(":");
            dict->operands.push_back(expression());
            if (!is_op("}")) expect_op(",");
          }
          ++i_;
          return dict;
        }
        break;
      default: break;
    }
    fail(tok.line, absl::StrCat("expected an expression, found ", describe(tok)));
  }

  ExprPtr postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        ++i_;
        if (cur().type == Token::Type::kInt) {  // x.0 is x[0]
          auto item = node(Expr::Kind::kItem, e->line);
          auto index = node(Expr::Kind::kLiteral, cur().line);
          index->literal = Value::from(t_[i_++].integer);
          item->operands.push_back(std::move(e));
          item->operands.push_back(std::move(index));
          e = std::move(item);
          continue;
        }
        auto attr = node(Expr::Kind::kAttr, e->line);
        attr->name = expect_name();
        attr->operands.push_back(std::move(e));
        e = std::move(attr);
      } else if (is_op("[")) {
        e = subscript(std::move(e));
      } else if (is_op("(")) {
        e = call(std::move(e), Expr::Kind::kCall, "");
      } else {
        return e;
      }
    }
  }

  ExprPtr subscript(ExprPtr subject) {
    const int line = cur().line;
    ++i_;
    ExprPtr parts[3];
    bool slice = false;
    if (!is_op(":")) parts[0] = expression();
    if (is_op(":")) {
      slice = true;
      ++i_;
      if (!is_op(":") && !is_op("]")) parts[1] = expression();
      if (is_op(":")) {
        ++i_;
        if (!is_op("]")) parts[2] = expression();
      }
    }
    expect_op("]");
    auto e = node(slice ? Expr::Kind::kSlice : Expr::Kind::kItem, line);
    e->operands.push_back(std::move(subject));
    if (slice)
      for (auto& p : parts) e->operands.push_back(std::move(p));
    else
      e->operands.push_back(std::move(parts[0]));
    return e;
  }

  // NAME(args, key=value, ...) applied to SUBJECT (a call, filter or test).
  ExprPtr call(ExprPtr subject, Expr::Kind kind, const std::string& name) {
    auto e = node(kind, subject->line);
    e->name = name;
    e->operands.push_back(std::move(subject));
    if (!is_op("(")) return e;
    ++i_;
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail(cur().line, "*args and **kwargs in calls are not supported");
      if (cur().type == Token::Type::kName && peek().type == Token::Type::kOp && peek().text == "=") {
        e->keywords.push_back(cur().text);
        i_ += 2;
        e->operands.push_back(expression());
      } else {
        if (!e->keywords.empty()) fail(cur().line, "a positional argument follows a keyword argument");
        e->operands.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++i_;
    return e;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (is_op(".")) {
      ++i_;
      name += "." + expect_name();
    }
    return name;
  }

  ExprPtr filters_and_tests(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        ++i_;
        const std::string name = dotted_name();
        e = call(std::move(e), Expr::Kind::kFilter, name);
      } else if (is_name("is")) {
        ++i_;
        bool negated = false;
        if (is_name("not")) {
          negated = true;
          ++i_;
        }
        const std::string name = dotted_name();
        if (is_op("(")) {
          e = call(std::move(e), Expr::Kind::kTest, name);
        } else {
          auto test = node(Expr::Kind::kTest, e->line);
          test->name = name;
          test->operands.push_back(std::move(e));
          // "is divisibleby 3": one bare argument
          const Token& t = cur();
          const bool starts_argument =
              (t.type == Token::Type::kName && t.text != "else" && t.text != "or" && t.text != "and" && t.text != "if") ||
              t.type == Token::Type::kString || t.type == Token::Type::kInt || t.type == Token::Type::kFloat ||
              (t.type == Token::Type::kOp && (t.text == "(" || t.text == "[" || t.text == "{"));
          if (starts_argument) test->operands.push_back(postfix(primary()));
          e = std::move(test);
        }
        e->negated = negated;
      } else if (is_op("(")) {
        e = call(std::move(e), Expr::Kind::kCall, "");
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

std::shared_ptr<Program> parse_program(std::string_view source, std::string name) {
  auto program = std::make_shared<Program>();
  program->name = std::move(name);
  program->body = Parser(Lexer(source).run()).program();
  return program;
}

}  // namespace interlace::model::jinja
