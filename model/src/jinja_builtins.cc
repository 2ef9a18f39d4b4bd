#include "jinja_builtins.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <set>

#include "absl/strings/str_cat.h"
#include "utf8proc.h"

namespace interlace::model::jinja {
namespace {


const std::string& need_string(const Value& v, const Args& a, const char* what) {
  if (!v.is_string()) fail(a.line, absl::StrCat(a.callee, ": ", what, " must be a string, not ", v.type_name()));
  return v.string;
}

// ---- Python's string methods ----

bool in_chars(char32_t c, const Value& chars) {
  if (chars.is_undefined() || chars.is_none()) return python_isspace(c);
  for (char32_t x : code_points(chars.string))
    if (x == c) return true;
  return false;
}

std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::vector<char32_t> cps = code_points(s);
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && in_chars(cps[b], chars)) ++b;
  if (right)
    while (e > b && in_chars(cps[e - 1], chars)) --e;
  return utf8(cps, b, e);
}

// str.split(sep, maxsplit) / rsplit: no separator splits on whitespace runs.
List split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right, const Args& a) {
  std::vector<std::string> parts;
  if (sep.is_undefined() || sep.is_none()) {
    const std::vector<char32_t> cps = code_points(s);
    std::vector<std::pair<size_t, size_t>> words;
    for (size_t i = 0; i < cps.size();) {
      while (i < cps.size() && python_isspace(cps[i])) ++i;
      if (i == cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !python_isspace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    if (maxsplit >= 0 && int64_t(words.size()) > maxsplit + 1) {
      // The last (or, from the right, first) part keeps the rest as it is, less outer whitespace.
      if (!from_right) {
        for (int64_t k = 0; k < maxsplit; ++k) parts.push_back(utf8(cps, words[size_t(k)].first, words[size_t(k)].second));
        parts.push_back(utf8(cps, words[size_t(maxsplit)].first, words.back().second));
      } else {
        const size_t keep = words.size() - size_t(maxsplit);
        parts.push_back(utf8(cps, words.front().first, words[keep - 1].second));
        for (size_t k = keep; k < words.size(); ++k) parts.push_back(utf8(cps, words[k].first, words[k].second));
      }
    } else {
      for (auto [b, e] : words) parts.push_back(utf8(cps, b, e));
    }
  } else {
    const std::string& d = need_string(sep, a, "the separator");
    if (d.empty()) fail(a.line, "split: empty separator");
    std::vector<size_t> cuts;
    for (size_t at = s.find(d); at != std::string::npos; at = s.find(d, at + d.size())) cuts.push_back(at);
    if (maxsplit >= 0 && int64_t(cuts.size()) > maxsplit) {
      if (from_right) cuts.erase(cuts.begin(), cuts.end() - maxsplit);
      else cuts.resize(size_t(maxsplit));
    }
    size_t start = 0;
    for (size_t c : cuts) {
      parts.push_back(s.substr(start, c - start));
      start = c + d.size();
    }
    parts.push_back(s.substr(start));
  }
  List out;
  for (auto& p : parts) out.push_back(Value::from(std::move(p)));
  return out;
}

// Python's case mappings: utf8proc's one-to-one mappings, and the characters
// that map to several ('ß'.upper() is 'SS') from Python's own table.
struct SpecialCasing {
  char32_t code_point;
  std::u32string_view upper, lower, title;
};
constexpr SpecialCasing kSpecialCasing[] = {
#include "jinja_special_casing.inc"
};

enum class Case { kLower, kUpper, kTitle, kCapitalize };

void append_case(std::string& out, char32_t c, Case to) {
  for (const SpecialCasing& sc : kSpecialCasing)
    if (sc.code_point == c) {
      for (char32_t x : to == Case::kLower ? sc.lower : to == Case::kUpper ? sc.upper : sc.title) append_utf8(out, x);
      return;
    }
  append_utf8(out, to == Case::kLower ? utf8proc_tolower(c) : to == Case::kUpper ? utf8proc_toupper(c) : utf8proc_totitle(c));
}

bool is_cased(char32_t c) {
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// lower(), upper(), title() (a cased letter after an uncased one starts a
// word) and capitalize() (the first character in title case, then lower).
std::string map_case(const std::string& s, Case mode) {
  std::string out;
  bool previous_cased = false, first = true;
  for (char32_t c : code_points(s)) {
    Case to = mode;
    if (mode == Case::kTitle) to = previous_cased ? Case::kLower : Case::kTitle;
    if (mode == Case::kCapitalize) to = first ? Case::kTitle : Case::kLower;
    append_case(out, c, to);
    previous_cased = is_cased(c);
    first = false;
  }
  return out;
}

std::string replace(const std::string& s, const std::string& old, const std::string& with, int64_t count, int line) {
  // The result's size, bounded before it is built (the renderer's string limit).
  const size_t most = old.empty() ? (s.size() + 1) * with.size() + s.size()
                                  : s.size() + (with.size() > old.size() ? (s.size() / old.size()) * (with.size() - old.size()) : 0);
  if (most > kMaxStringBytes) fail(line, absl::StrCat("replace: the result would be over the ", kMaxStringBytes, "-byte limit"));
  if (old.empty()) {  // Python inserts WITH between every character
    std::string out = with;
    for (char32_t c : code_points(s)) {
      append_utf8(out, c);
      out += with;
    }
    return out;
  }
  std::string out;
  size_t start = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    const size_t at = s.find(old, start);
    if (at == std::string::npos) break;
    out += s.substr(start, at - start) + with;
    start = at + old.size();
  }
  return out + s.substr(start);
}

int64_t count_of(const std::string& s, const std::string& sub) {
  if (sub.empty()) return int64_t(code_points(s).size()) + 1;
  int64_t n = 0;
  for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
  return n;
}

// A byte offset in S as a code point index (what Python's find returns).
int64_t code_point_index(const std::string& s, size_t byte) {
  if (byte == std::string::npos) return -1;
  return int64_t(code_points(std::string_view(s).substr(0, byte)).size());
}

bool starts_or_ends(const std::string& s, const Value& affix, bool start, const Args& a) {
  auto one = [&](const Value& v) {
    const std::string& x = need_string(v, a, "the prefix or suffix");
    return start ? s.starts_with(x) : s.ends_with(x);
  };
  if (affix.is_list()) return std::any_of(affix.list->begin(), affix.list->end(), one);
  return one(affix);
}

Value string_method(const std::string& s, const std::string& name) {
  static const std::set<std::string> kMethods = {"startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip",
                                                 "lower", "upper", "title", "capitalize", "replace", "find", "rfind", "count",
                                                 "join", "isdigit", "isspace", "isalpha", "splitlines"};
  if (!kMethods.contains(name)) return Value::undefined(absl::StrCat("'str object' has no attribute '", name, "'"));
  return Value::from(Function([s, name](Args& a) -> Value {
    a.callee = absl::StrCat("str.", name);
    if (name == "startswith" || name == "endswith") return Value::from(starts_or_ends(s, a.get(0, "prefix"), name == "startswith", a));
    if (name == "split" || name == "rsplit") {
      const Value maxsplit = a.get(1, "maxsplit");
      return Value::from(split(s, a.get(0, "sep"), is_int_like(maxsplit) ? as_int(maxsplit) : -1, name == "rsplit", a));
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip")
      return Value::from(strip(s, a.get(0, "chars"), name != "rstrip", name != "lstrip"));
    if (name == "lower") return Value::from(map_case(s, Case::kLower));
    if (name == "upper") return Value::from(map_case(s, Case::kUpper));
    if (name == "title") return Value::from(map_case(s, Case::kTitle));
    if (name == "capitalize") return Value::from(map_case(s, Case::kCapitalize));
    if (name == "replace") {
      const Value count = a.get(2, "count");
      return Value::from(replace(s, need_string(a.get(0, "old"), a, "old"), need_string(a.get(1, "new"), a, "new"),
                                 is_int_like(count) ? as_int(count) : -1, a.line));
    }
    if (name == "find") return Value::from(code_point_index(s, s.find(need_string(a.get(0, "sub"), a, "sub"))));
    if (name == "rfind") return Value::from(code_point_index(s, s.rfind(need_string(a.get(0, "sub"), a, "sub"))));
    if (name == "count") return Value::from(count_of(s, need_string(a.get(0, "sub"), a, "sub")));
    if (name == "join") {
      std::string out;
      const List items = iterate(a.get(0, "iterable"), a.line);
      for (size_t i = 0; i < items.size(); ++i) out += (i ? s : "") + need_string(items[i], a, "each item");
      return Value::from(std::move(out));
    }
    if (name == "splitlines") {
      List out;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i)
        if (s[i] == '\n' || s[i] == '\r') {
          out.push_back(Value::from(s.substr(start, i - start)));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      if (start < s.size()) out.push_back(Value::from(s.substr(start)));
      return Value::from(std::move(out));
    }
    const std::vector<char32_t> cps = code_points(s);
    bool all = !cps.empty();
    for (char32_t c : cps) {
      const auto cat = utf8proc_category(c);
      if (name == "isspace") all = all && python_isspace(c);
      else if (name == "isdigit") all = all && cat == UTF8PROC_CATEGORY_ND;
      else all = all && cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
    }
    return Value::from(all);
  }));
}

Value dict_method(const std::shared_ptr<Dict>& d, const std::string& name) {
  return Value::from(Function([d, name](Args& a) -> Value {
    if (name == "get") {
      const Value key = a.get(0, "key");
      if (key.is_string())
        if (const Value* v = d->find(key.string)) return *v;
      const Value fallback = a.get(1, "default");
      return fallback.is_undefined() ? Value::none() : fallback;
    }
    List out;
    for (const auto& [k, v] : d->items) {
      if (name == "keys") out.push_back(Value::from(k));
      else if (name == "values") out.push_back(v);
      else out.push_back(Value::from(List{Value::from(k), v}));
    }
    return Value::from(std::move(out));
  }));
}

int64_t length(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return 0;
    case Value::Kind::kString: return int64_t(code_points(v.string).size());
    case Value::Kind::kList: return int64_t(v.list->size());
    case Value::Kind::kDict: return int64_t(v.dict->items.size());
    default: fail(line, absl::StrCat("object of type '", v.type_name(), "' has no len()"));
  }
}

// An attribute path as filters take it ("name" or "function.name" or "0").
Value attribute_path(const Value& v, const std::string& path, int line) {
  Value cur = v;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = digits ? get_item(cur, Value::from(int64_t(std::stoll(part))), line) : get_item(cur, Value::from(part), line);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ascii_json(const std::string& s) {
  std::string out;
  for (char32_t c : code_points(s)) {
    if (c < 0x80) {
      out += char(c);
      continue;
    }
    auto unit = [&](unsigned u) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\u%04x", u);
      out += hex;
    };
    if (c >= 0x10000) {
      unit(0xD800 + ((c - 0x10000) >> 10));
      unit(0xDC00 + ((c - 0x10000) & 0x3FF));
    } else {
      unit(unsigned(c));
    }
  }
  return out;
}

Value sort_key(const Value& v, bool case_sensitive, const Value& attribute, int line) {
  Value k = attribute.is_string() ? attribute_path(v, attribute.string, line) : v;
  if (!case_sensitive && k.is_string()) k.string = map_case(k.string, Case::kLower);
  return k;
}

}  // namespace

Value get_attribute(const Value& object, const std::string& name, int line) {
  switch (object.kind) {
    case Value::Kind::kUndefined: fail_undefined(object, line);
    case Value::Kind::kString: return string_method(object.string, name);
    case Value::Kind::kDict:
      if (!object.is_namespace && (name == "items" || name == "keys" || name == "values" || name == "get"))
        return dict_method(object.dict, name);
      if (const Value* v = object.dict->find(name)) return *v;
      return Value::undefined(absl::StrCat("'dict object' has no attribute '", name, "'"));
    default: return Value::undefined(absl::StrCat("'", object.type_name(), " object' has no attribute '", name, "'"));
  }
}

Value get_item(const Value& object, const Value& key, int line) {
  auto index = [&](int64_t size) -> std::optional<size_t> {
    if (!is_int_like(key)) return std::nullopt;
    int64_t i = as_int(key);
    if (i < 0) i += size;
    if (i < 0 || i >= size) return std::nullopt;
    return size_t(i);
  };
  switch (object.kind) {
    case Value::Kind::kUndefined: fail_undefined(object, line);
    case Value::Kind::kList:
      if (auto i = index(int64_t(object.list->size()))) return (*object.list)[*i];
      break;
    case Value::Kind::kString: {
      if (key.is_string()) return get_attribute(object, key.string, line);
      const std::vector<char32_t> cps = code_points(object.string);
      if (auto i = index(int64_t(cps.size()))) return Value::from(utf8(cps, *i, *i + 1));
      break;
    }
    case Value::Kind::kDict:
      if (key.is_string()) {
        if (const Value* v = object.dict->find(key.string)) return *v;
        if (!object.is_namespace) return get_attribute(object, key.string, line);
      }
      break;
    default: break;
  }
  return Value::undefined(absl::StrCat("'", object.type_name(), " object' has no item ", repr(key, line)));
}

Value slice(const Value& object, const Value& start, const Value& stop, const Value& step, int line) {
  auto bound = [&](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (!is_int_like(v)) fail(line, absl::StrCat("slice ", what, " must be an integer, not ", v.type_name()));
    return as_int(v);
  };
  const int64_t st = bound(step, "step").value_or(1);
  if (st == 0) fail(line, "slice step cannot be zero");
  std::vector<char32_t> cps;
  int64_t n = 0;
  if (object.is_list()) n = int64_t(object.list->size());
  else if (object.is_string()) n = int64_t((cps = code_points(object.string)).size());
  else if (object.is_undefined()) fail_undefined(object, line);
  else fail(line, absl::StrCat("a ", object.type_name(), " cannot be sliced"));
  // Python's slice index adjustment.
  auto adjust = [&](std::optional<int64_t> v, int64_t if_absent) {
    if (!v) return if_absent;
    int64_t x = *v;
    if (x < 0) x = std::max<int64_t>(x + n, st < 0 ? -1 : 0);
    else x = std::min<int64_t>(x, st < 0 ? n - 1 : n);
    return x;
  };
  const int64_t b = adjust(bound(start, "start"), st < 0 ? n - 1 : 0);
  const int64_t e = adjust(bound(stop, "stop"), st < 0 ? -1 : n);
  List items;
  std::string s;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
    if (object.is_list()) items.push_back((*object.list)[size_t(i)]);
    else append_utf8(s, cps[size_t(i)]);
  }
  return object.is_list() ? Value::from(std::move(items)) : Value::from(std::move(s));
}

bool contains(const Value& container, const Value& item, int line) {
  switch (container.kind) {
    case Value::Kind::kUndefined: return false;
    case Value::Kind::kString:
      if (!item.is_string()) fail(line, absl::StrCat("'in <string>' requires a string on the left, not ", item.type_name()));
      return container.string.find(item.string) != std::string::npos;
    case Value::Kind::kList:
      return std::any_of(container.list->begin(), container.list->end(), [&](const Value& v) { return equal(v, item); });
    case Value::Kind::kDict: return item.is_string() && container.dict->find(item.string) != nullptr;
    default: fail(line, absl::StrCat("argument of type '", container.type_name(), "' is not iterable"));
  }
}

List iterate(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return {};
    case Value::Kind::kList: return *v.list;
    case Value::Kind::kDict: {
      List keys;
      for (const auto& [k, _] : v.dict->items) keys.push_back(Value::from(k));
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      for (char32_t c : code_points(v.string)) {
        std::string one;
        append_utf8(one, c);
        chars.push_back(Value::from(std::move(one)));
      }
      return chars;
    }
    default: fail(line, absl::StrCat("'", v.type_name(), "' object is not iterable"));
  }
}

Value apply_filter(const std::string& name, Args& a, const TestRunner& run_test) {
  const Value v = a.positional[0];
  const int line = a.line;
  auto arg = [&](size_t i, const char* key) { return a.get(i + 1, key); };
  auto flag = [&](size_t i, const char* key) { return arg(i, key).truthy(); };
  if (name == "tojson") {
    JsonStyle style;
    const Value indent = arg(1, "indent"), separators = arg(2, "separators");
    if (is_int_like(indent)) {
      style.indent = int(as_int(indent));
      style.item_separator = ",";
    }
    if (separators.is_list() && separators.list->size() == 2) {
      style.item_separator = need_string((*separators.list)[0], a, "separators[0]");
      style.key_separator = need_string((*separators.list)[1], a, "separators[1]");
    }
    style.sort_keys = flag(3, "sort_keys");
    std::string out = to_json(v, style, line);
    return Value::from(flag(0, "ensure_ascii") ? ascii_json(out) : std::move(out));
  }
  if (name == "trim") return Value::from(strip(str(v, line), arg(0, "chars"), true, true));
  if (name == "length" || name == "count") return Value::from(length(v, line));
  if (name == "lower") return Value::from(map_case(str(v, line), Case::kLower));
  if (name == "upper") return Value::from(map_case(str(v, line), Case::kUpper));
  if (name == "title") return Value::from(map_case(str(v, line), Case::kTitle));
  if (name == "capitalize") return Value::from(map_case(str(v, line), Case::kCapitalize));
  if (name == "default" || name == "d") {
    const bool use_default = v.is_undefined() || (flag(1, "boolean") && !v.truthy());
    const Value fallback = arg(0, "default_value");
    return use_default ? (fallback.is_undefined() ? Value::from(std::string()) : fallback) : v;
  }
  if (name == "join") {
    const Value sep = arg(0, "d"), attribute = arg(1, "attribute");
    std::string out;
    const List items = iterate(v, line);
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += sep.is_undefined() ? "" : str(sep, line);
      out += str(attribute.is_string() ? attribute_path(items[i], attribute.string, line) : items[i], line);
    }
    return Value::from(std::move(out));
  }
  if (name == "first" || name == "last") {
    const List items = iterate(v, line);
    if (items.empty()) return Value::undefined(absl::StrCat("the ", name, " filter got an empty sequence"));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::from(iterate(v, line));
  if (name == "string") return Value::from(str(v, line));
  if (name == "safe") return v;
  if (name == "escape" || name == "e") return Value::from(html_escape(str(v, line)));
  if (name == "int" || name == "float") {
    const bool to_int = name == "int";
    Value fallback = arg(0, "default");
    if (fallback.is_undefined()) fallback = to_int ? Value::from(int64_t{0}) : Value::from(0.0);
    double d = 0;
    if (v.is_number()) {
      d = v.as_double();
      if (to_int && is_int_like(v)) return Value::from(as_int(v));
    } else if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string s = strip(v.string, Value::undefined(), true, true);
        d = std::stod(s, &used);
        if (used != s.size()) return fallback;
      } catch (...) {
        return fallback;
      }
    } else {
      return fallback;
    }
    return to_int ? Value::from(int64_t(std::trunc(d))) : Value::from(d);
  }
  if (name == "abs") {
    if (!v.is_number()) fail(line, absl::StrCat("bad operand type for abs(): '", v.type_name(), "'"));
    return v.kind == Value::Kind::kFloat ? Value::from(std::fabs(v.real)) : Value::from(int64_t(std::llabs(as_int(v))));
  }
  if (name == "round") {
    const Value precision = arg(0, "precision");
    const double scale = std::pow(10.0, is_int_like(precision) ? double(as_int(precision)) : 0.0);
    const std::string method = arg(1, "method").is_string() ? arg(1, "method").string : "common";
    const double x = v.as_double() * scale;
    const double r = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::nearbyint(x);
    return Value::from(r / scale);
  }
  if (name == "replace") {
    const Value count = arg(2, "count");
    return Value::from(replace(str(v, line), str(arg(0, "old"), line), str(arg(1, "new"), line),
                               is_int_like(count) ? as_int(count) : -1, line));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::from(List{});
    if (!v.is_dict()) fail(line, absl::StrCat("items: a ", v.type_name(), " is not a mapping"));
    Args none{line, "items", {}, {}};
    return (*dict_method(v.dict, "items").function)(none);
  }
  if (name == "dictsort") {
    if (!v.is_dict()) fail(line, absl::StrCat("dictsort: a ", v.type_name(), " is not a mapping"));
    const bool by_value = arg(1, "by").is_string() && arg(1, "by").string == "value";
    List pairs;
    for (const auto& [k, x] : v.dict->items) pairs.push_back(Value::from(List{Value::from(k), x}));
    const bool cs = flag(0, "case_sensitive");
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& p, const Value& q) {
      return compare(sort_key((*p.list)[by_value], cs, Value::undefined(), line), sort_key((*q.list)[by_value], cs, Value::undefined(), line), line) < 0;
    });
    if (flag(2, "reverse")) std::reverse(pairs.begin(), pairs.end());
    return Value::from(std::move(pairs));
  }
  if (name == "map") {
    List out;
    const Value attribute = a.get(size_t(-1), "attribute");
    for (const Value& item : iterate(v, line)) {
      if (attribute.is_string()) {
        Value x = attribute_path(item, attribute.string, line);
        if (x.is_undefined() && !a.get(size_t(-1), "default").is_undefined()) x = a.get(size_t(-1), "default");
        out.push_back(x);
        continue;
      }
      const Value filter = arg(0, "filter");
      if (!filter.is_string()) fail(line, "map needs a filter name or attribute=");
      Args inner{line, absl::StrCat("filter '", filter.string, "'"), {item}, a.keyword};
      inner.positional.insert(inner.positional.end(), a.positional.begin() + 2, a.positional.end());
      out.push_back(apply_filter(filter.string, inner, run_test));
    }
    return Value::from(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attribute = name.ends_with("attr"), keep = name.starts_with("select");
    const size_t test_at = by_attribute ? 2 : 1;
    List out;
    for (const Value& item : iterate(v, line)) {
      const Value subject = by_attribute ? attribute_path(item, str(a.positional.at(1), line), line) : item;
      bool pass;
      if (a.positional.size() <= test_at) {
        pass = subject.truthy();
      } else {
        Args t{line, "", {subject}, {}};
        t.positional.insert(t.positional.end(), a.positional.begin() + long(test_at) + 1, a.positional.end());
        const std::string test = str(a.positional[test_at], line);
        t.callee = absl::StrCat("test '", test, "'");
        pass = run_test(test, t);
      }
      if (pass == keep) out.push_back(item);
    }
    return Value::from(std::move(out));
  }
  if (name == "unique") {
    List out;
    std::vector<Value> seen;
    for (const Value& item : iterate(v, line)) {
      const Value k = sort_key(item, flag(0, "case_sensitive"), arg(1, "attribute"), line);
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); })) {
        seen.push_back(k);
        out.push_back(item);
      }
    }
    return Value::from(std::move(out));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<char32_t> cps = code_points(v.string);
      std::reverse(cps.begin(), cps.end());
      return Value::from(utf8(cps, 0, cps.size()));
    }
    List items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value::from(std::move(items));
  }
  if (name == "sort") {
    List items = iterate(v, line);
    const bool cs = flag(1, "case_sensitive");
    const Value attribute = arg(2, "attribute");
    std::stable_sort(items.begin(), items.end(), [&](const Value& p, const Value& q) {
      return compare(sort_key(p, cs, attribute, line), sort_key(q, cs, attribute, line), line) < 0;
    });
    if (flag(0, "reverse")) std::reverse(items.begin(), items.end());
    return Value::from(std::move(items));
  }
  if (name == "sum") {
    const Value attribute = arg(0, "attribute");
    Value total = arg(1, "start").is_undefined() ? Value::from(int64_t{0}) : arg(1, "start");
    for (const Value& item : iterate(v, line)) {
      const Value x = attribute.is_string() ? attribute_path(item, attribute.string, line) : item;
      if (!x.is_number() || !total.is_number()) fail(line, "sum: the items must be numbers");
      total = is_int_like(x) && is_int_like(total) ? Value::from(as_int(total) + as_int(x)) : Value::from(total.as_double() + x.as_double());
    }
    return total;
  }
  if (name == "min" || name == "max") {
    const List items = iterate(v, line);
    if (items.empty()) return Value::undefined(absl::StrCat("the ", name, " filter got an empty sequence"));
    const bool cs = flag(0, "case_sensitive");
    const Value attribute = arg(1, "attribute");
    size_t best = 0;
    for (size_t i = 1; i < items.size(); ++i) {
      const int c = compare(sort_key(items[i], cs, attribute, line), sort_key(items[best], cs, attribute, line), line);
      if (name == "min" ? c < 0 : c > 0) best = i;
    }
    return items[best];
  }
  if (name == "indent") {
    const Value width = arg(0, "width");
    const std::string pad = width.is_string() ? width.string : std::string(is_int_like(width) ? size_t(as_int(width)) : 4, ' ');
    std::vector<std::string> lines;
    const std::string s = str(v, line) + "\n";
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i)
      if (s[i] == '\n' || s[i] == '\r') {
        lines.push_back(s.substr(start, i - start));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        start = i + 1;
      }
    std::string out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) out += "\n" + (lines[i].empty() && !flag(2, "blank") ? "" : pad) + lines[i];
    if (flag(1, "first")) out = pad + out;
    return Value::from(std::move(out));
  }
  fail(line, absl::StrCat("the filter '", name, "' is not supported by this interpreter"));
}

bool apply_test(const std::string& name, Args& a) {
  const Value& v = a.positional[0];
  const Value other = a.get(1, "other");
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == K::kBool;
  if (name == "true") return v.kind == K::kBool && v.boolean;
  if (name == "false") return v.kind == K::kBool && !v.boolean;
  if (name == "integer") return v.kind == K::kInt;
  if (name == "float") return v.kind == K::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict() && !v.is_namespace;
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace);
  if (name == "callable") return v.kind == K::kFunction;
  if (name == "eq" || name == "equalto" || name == "==") return equal(v, other);
  if (name == "ne" || name == "!=") return !equal(v, other);
  if (name == "lt" || name == "lessthan" || name == "<") return compare(v, other, a.line) < 0;
  if (name == "le" || name == "<=") return compare(v, other, a.line) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, other, a.line) > 0;
  if (name == "ge" || name == ">=") return compare(v, other, a.line) >= 0;
  if (name == "in") return contains(a.get(1, "seq"), v, a.line);
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!is_int_like(v)) fail(a.line, absl::StrCat("test '", name, "' needs an integer, not ", v.type_name()));
    if (name == "divisibleby") {
      const Value n = a.get(1, "num");
      if (!is_int_like(n) || as_int(n) == 0) fail(a.line, "divisibleby needs a non-zero integer");
      return as_int(v) % as_int(n) == 0;
    }
    return (as_int(v) % 2 != 0) == (name == "odd");
  }
  if (name == "sameas") {
    if (v.kind != other.kind) return false;
    if (v.is_list()) return v.list == other.list;
    if (v.is_dict()) return v.dict == other.dict;
    return equal(v, other);
  }
  if (name == "lower" || name == "upper") {
    const std::string s = str(v, a.line);
    return s == map_case(s, name == "lower" ? Case::kLower : Case::kUpper);
  }
  fail(a.line, absl::StrCat("the test '", name, "' is not supported by this interpreter"));
}

void add_globals(Dict& g) {
  g.set("range", Value::from(Function([](Args& a) {
          a.callee = "range";
          a.expect_at_most(3);
          for (const Value& v : a.positional)
            if (!is_int_like(v)) fail(a.line, absl::StrCat("range() takes integers, not ", v.type_name()));
          int64_t start = 0, stop = 0, step = 1;
          if (a.positional.size() == 1) stop = as_int(a.positional[0]);
          else if (a.positional.size() >= 2) start = as_int(a.positional[0]), stop = as_int(a.positional[1]);
          if (a.positional.size() == 3) step = as_int(a.positional[2]);
          if (step == 0) fail(a.line, "range() step must not be zero");
          if ((stop - start) / step > 100'000) fail(a.line, "range() of more than 100000 items");
          List out;
          for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::from(i));
          return Value::from(std::move(out));
        })));
  g.set("namespace", Value::from(Function([](Args& a) {
          Value ns = Value::from(Dict{});
          ns.is_namespace = true;
          for (const Value& init : a.positional)
            if (init.is_dict())
              for (const auto& [k, v] : init.dict->items) ns.dict->set(k, v);
          for (const auto& [k, v] : a.keyword) ns.dict->set(k, v);
          return ns;
        })));
  g.set("dict", Value::from(Function([](Args& a) {
          Dict d;
          for (const auto& [k, v] : a.keyword) d.set(k, v);
          return Value::from(std::move(d));
        })));
  g.set("raise_exception", Value::from(Function([](Args& a) -> Value {
          fail(a.line, absl::StrCat("the template raised an exception: ", str(a.get(0, "message"), a.line)));
        })));
  g.set("strftime_now", Value::from(Function([](Args& a) {
          const Value format = a.get(0, "format");
          if (!format.is_string()) fail(a.line, "strftime_now needs a format string");
          const std::time_t now = std::time(nullptr);
          std::tm local{};
          localtime_r(&now, &local);
          char buf[256];
          const size_t n = std::strftime(buf, sizeof buf, format.string.c_str(), &local);
          return Value::from(std::string(buf, n));
        })));
}

}  // namespace interlace::model::jinja
