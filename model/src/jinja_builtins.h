// What a template can reach besides its own syntax: attribute and item
// access, slicing, `in`, iteration, filters, tests, string and dict methods
// and the globals (range, namespace, raise_exception, strftime_now, dict),
// each behaving as under transformers' jinja2 sandbox.
#pragma once

#include <functional>
#include <string>

#include "jinja_value.h"

namespace interlace::model::jinja {

Value get_attribute(const Value& object, const std::string& name, int line);
Value get_item(const Value& object, const Value& key, int line);
Value slice(const Value& object, const Value& start, const Value& stop, const Value& step, int line);
bool contains(const Value& container, const Value& item, int line);
List iterate(const Value& v, int line);

// Args' first positional argument is the value filtered or tested.
using TestRunner = std::function<bool(const std::string& test, Args& args)>;
Value apply_filter(const std::string& name, Args& args, const TestRunner& run_test);
bool apply_test(const std::string& name, Args& args);
void add_globals(Dict& globals);

}  // namespace interlace::model::jinja
