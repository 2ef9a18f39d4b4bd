// The values a Jinja template computes with, and the Python semantics
// templates rely on: truthiness, equality and ordering, str() and repr(),
// json.dumps, and strings indexed by code point.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace interlace::model::jinja {

// Errors inside the interpreter are thrown as this and turned into an
// absl::Status at Template::parse/render, so nothing crosses the module.
struct Error {
  int line = 0;
  std::string message;
};
[[noreturn]] void fail(int line, std::string message);

// The largest string a rendering may make (its output included): a model
// directory's template is not ours, and a gateway renders one per request.
inline constexpr size_t kMaxStringBytes = size_t{64} << 20;

struct Value;
using List = std::vector<Value>;
struct Dict {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, as Python's dict
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(const std::string& key, Value v);
};
struct Args;
using Function = std::function<Value(Args&)>;

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };
  Kind kind = Kind::kUndefined;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string string;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // also a namespace() (is_namespace) and loop
  std::shared_ptr<Function> function;
  bool is_namespace = false;
  std::string undefined_name;  // what was undefined, for the error if it is used

  static Value undefined(std::string name = {});
  static Value none();
  static Value from(bool b);
  static Value from(int64_t i);
  static Value from(double d);
  static Value from(std::string s);
  static Value from(List l);
  static Value from(Dict d);
  static Value from(Function f);
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_list() const { return kind == Kind::kList; }
  bool is_dict() const { return kind == Kind::kDict; }
  bool truthy() const;
  double as_double() const;
  std::string type_name() const;
};

// Positional and keyword arguments of a call.
struct Args {
  int line = 0;
  std::string callee;
  List positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The argument at POSITION or named NAME; undefined if neither was given.
  Value get(size_t position, std::string_view name) const;
  void expect_at_most(size_t positional_count) const;
};

// Python's bool is an int: True + 1 == 2, "ab" * True == "ab".
bool is_int_like(const Value& v);
int64_t as_int(const Value& v);
// The error for using an undefined value ("'foo' is undefined").
[[noreturn]] void fail_undefined(const Value& v, int line);

bool equal(const Value& a, const Value& b);
// -1, 0, 1 as Python orders numbers, strings and lists; fails on other types.
int compare(const Value& a, const Value& b, int line);
// Python's str() (what {{ x }} prints) and repr().
std::string str(const Value& v, int line);
std::string repr(const Value& v, int line);
std::string python_float(double d);
// json.dumps(v, ensure_ascii=False, indent=INDENT, separators=..., sort_keys=...).
struct JsonStyle {
  std::optional<int> indent;
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonStyle& style, int line);

// Strings as Python sees them: sequences of code points.
std::vector<char32_t> code_points(std::string_view utf8);
std::string utf8(const std::vector<char32_t>& cps, size_t begin, size_t end);
void append_utf8(std::string& out, char32_t cp);
bool python_isspace(char32_t cp);

}  // namespace interlace::model::jinja
