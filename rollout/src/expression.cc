// A recursive-descent evaluator for the calculator tool, with every operation
// checked: the input comes from a model and must never crash us.
#include <cctype>

#include "absl/strings/str_cat.h"
#include "interlace/rollout/environment.h"

namespace interlace::rollout {
namespace {

constexpr size_t kMaxLength = 200;
constexpr int kMaxDepth = 32;

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  absl::StatusOr<int64_t> parse() {
    auto v = sum(0);
    if (!v.ok()) return v;
    skip();
    if (i_ != s_.size()) return error(absl::StrCat("unexpected '", std::string(1, s_[i_]), "'"));
    return v;
  }

 private:
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  absl::Status error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " at position ", i_));
  }
  absl::StatusOr<int64_t> sum(int depth) {
    auto left = product(depth);
    if (!left.ok()) return left;
    int64_t v = *left;
    for (skip(); i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-'); skip()) {
      const char op = s_[i_++];
      auto right = product(depth);
      if (!right.ok()) return right;
      if (op == '+' ? __builtin_add_overflow(v, *right, &v) : __builtin_sub_overflow(v, *right, &v))
        return error("overflow");
    }
    return v;
  }
  absl::StatusOr<int64_t> product(int depth) {
    auto left = unary(depth);
    if (!left.ok()) return left;
    int64_t v = *left;
    for (skip(); i_ < s_.size() && (s_[i_] == '*' || s_[i_] == '/'); skip()) {
      const char op = s_[i_++];
      auto right = unary(depth);
      if (!right.ok()) return right;
      if (op == '*') {
        if (__builtin_mul_overflow(v, *right, &v)) return error("overflow");
      } else {
        if (*right == 0) return error("division by zero");
        if (v == INT64_MIN && *right == -1) return error("overflow");
        if (v % *right != 0) return error(absl::StrCat(v, " / ", *right, " is not a whole number"));
        v /= *right;
      }
    }
    return v;
  }
  absl::StatusOr<int64_t> unary(int depth) {
    skip();
    if (i_ < s_.size() && s_[i_] == '-') {
      ++i_;
      auto v = unary(depth + 1);
      if (!v.ok()) return v;
      if (*v == INT64_MIN) return error("overflow");
      return -*v;
    }
    return atom(depth);
  }
  absl::StatusOr<int64_t> atom(int depth) {
    if (depth > kMaxDepth) return error("nested too deeply");
    skip();
    if (i_ >= s_.size()) return error("unexpected end of expression");
    if (s_[i_] == '(') {
      ++i_;
      auto v = sum(depth + 1);
      if (!v.ok()) return v;
      skip();
      if (i_ >= s_.size() || s_[i_] != ')') return error("missing ')'");
      ++i_;
      return v;
    }
    if (!std::isdigit(static_cast<unsigned char>(s_[i_])))
      return error(absl::StrCat("expected a number, got '", std::string(1, s_[i_]), "'"));
    int64_t v = 0;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
      if (__builtin_mul_overflow(v, int64_t{10}, &v) || __builtin_add_overflow(v, int64_t(s_[i_] - '0'), &v))
        return error("number too large");
      ++i_;
    }
    return v;
  }

  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

absl::StatusOr<int64_t> evaluate_expression(const std::string& expression) {
  if (expression.size() > kMaxLength)
    return absl::InvalidArgumentError(absl::StrCat("expression longer than ", kMaxLength, " characters"));
  return Parser(expression).parse();
}

}  // namespace interlace::rollout
