// The chat template, with interleaved thinking.
//
// Each message renders on its own, to
//   <|im_start|>{role}\n ... <|im_end|>
// and a conversation is the concatenation of its messages, so rendering is
// append-only by construction: the tokens of turns 1..N are a prefix of the
// tokens of turns 1..N+1, whatever the tokenizer. An assistant message is
//   <|im_start|>assistant\n<think>{thinking}</think>{content}<tool_call>{json}</tool_call>...<|im_end|>
// and its thinking is kept in history, never stripped. The generation prompt
// is the assistant header, so what a model generates after it (up to and
// including <|im_end|>) is exactly the rest of its rendered message.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace interlace::model {

enum class Role { kSystem, kUser, kAssistant, kTool };
std::string role_name(Role r);

struct ToolCall {
  std::string name;
  nlohmann::json arguments = nlohmann::json::object();
  bool operator==(const ToolCall&) const = default;
};

struct Message {
  Role role = Role::kUser;
  std::string content;
  std::string thinking;  // assistant only
  std::vector<ToolCall> tool_calls;  // assistant only
  bool operator==(const Message&) const = default;
};

class ChatTemplate {
 public:
  // Fails if the tokenizer lacks one of the template's special tokens.
  static absl::StatusOr<ChatTemplate> create(const Tokenizer& tokenizer);

  std::vector<int32_t> render_message(const Message& m) const;
  std::vector<int32_t> render(std::span<const Message> messages, bool add_generation_prompt) const;
  std::vector<int32_t> generation_prompt() const;
  int32_t end_of_turn() const { return im_end_; }
  // Parses what a model generated after the generation prompt back into a message.
  // A tool call whose body is not {"name": str, "arguments": object} is an error
  // naming the call.
  absl::StatusOr<Message> parse_assistant(std::span<const int32_t> generated) const;

 private:
  explicit ChatTemplate(const Tokenizer& t) : tok_(&t) {}
  void append_text(std::vector<int32_t>& out, const std::string& text) const;
  const Tokenizer* tok_;
  int32_t im_start_ = 0, im_end_ = 0, think_ = 0, end_think_ = 0, tool_call_ = 0, end_tool_call_ = 0,
          tool_response_ = 0, end_tool_response_ = 0;
};

}  // namespace interlace::model
