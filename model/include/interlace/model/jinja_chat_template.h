// A model's own chat template, as text: tokenizer_config.json's chat_template
// rendered by the Jinja interpreter the way transformers' apply_chat_template
// renders it (the tokenizer's special tokens as variables: bos_token, ...).
// Interlace's own models carry no such file; for them the same format that
// ChatTemplate renders token by token is available as a Jinja template
// (model/templates/interlace_chat.jinja), so both paths can be compared.
//
// The agent loop never re-renders history: it appends the tokens a model
// generated and the rendering of each new message. Some templates render
// earlier turns differently once the conversation has moved on (Qwen3 drops
// the reasoning of assistant turns before the last user query), so their
// rendering of a whole conversation is not what the model saw while it was
// generating; first_rerendered_message() finds where that happens.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/model/jinja.h"
#include "nlohmann/json.hpp"

namespace interlace::model {

class JinjaChatTemplate {
 public:
  // DIR/tokenizer_config.json's chat_template (a string, or the "default" of
  // a list of named templates) with its special tokens; Interlace's own
  // template when DIR has no tokenizer_config.json or it has no chat_template.
  static absl::StatusOr<JinjaChatTemplate> load(const std::string& dir);
  static JinjaChatTemplate interlace();
  // A template's source with the variables it is rendered with (special tokens).
  static absl::StatusOr<JinjaChatTemplate> from_source(std::string_view source, nlohmann::ordered_json variables,
                                                       std::string origin);

  // CONVERSATION is {"messages": [...], "tools": [...], "add_generation_prompt":
  // bool, other template variables...} or just the messages array.
  absl::StatusOr<std::string> render(const nlohmann::ordered_json& conversation) const;

  // The index of the first message whose addition changes how the messages
  // before it render (no generation prompt): the template rewrote history
  // there. nullopt when each rendering starts with the one before.
  absl::StatusOr<std::optional<size_t>> first_rerendered_message(const nlohmann::ordered_json& conversation) const;

  // Where the template came from ("DIR/tokenizer_config.json" or "interlace").
  const std::string& origin() const { return origin_; }

 private:
  JinjaChatTemplate(jinja::Template t, nlohmann::ordered_json variables, std::string origin)
      : template_(std::move(t)), variables_(std::move(variables)), origin_(std::move(origin)) {}
  jinja::Template template_;
  nlohmann::ordered_json variables_;  // bos_token, eos_token, ...
  std::string origin_;
};

// The source of Interlace's own chat template.
const std::string& interlace_chat_template_source();

}  // namespace interlace::model
