// A Jinja interpreter for chat templates.
//
// Hugging Face models ship their chat format as a Jinja program
// (tokenizer_config.json's chat_template). transformers renders it with
// Python's jinja2 in a sandbox with trim_blocks and lstrip_blocks on, loop
// controls (break, continue) enabled, a JSON `tojson` filter (not HTML-safe,
// keys in insertion order) and the globals raise_exception and strftime_now.
// This interpreter reproduces that environment for what real chat templates
// use: if/elif/else, for (loop.*, else, inline if, unpacking), set (also on a
// namespace and as a block), macros, break/continue, raw, whitespace control,
// the usual filters, tests, string/dict methods and Python's str() and
// json.dumps formatting. Anything else fails to parse or render with the
// template line and the construct named, never by rendering something else.
// Its output is checked against jinja2 on generated conversations
// (tests/tokenizer/check_chat_templates.sh).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::model::jinja {

struct Program;  // the parsed template (src/jinja_syntax.h)

class Template {
 public:
  // NAME prefixes every error ("chat template line 12: ...").
  static absl::StatusOr<Template> parse(std::string_view source, std::string name = "template");
  // The context's keys are the template's variables (messages, tools,
  // add_generation_prompt, bos_token, ...); JSON objects keep their key order.
  absl::StatusOr<std::string> render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const Program> program_;
};

}  // namespace interlace::model::jinja
