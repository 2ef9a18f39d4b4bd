#include "interlace/model/chat_template.h"

#include "absl/strings/str_cat.h"

namespace interlace::model {

std::string role_name(Role r) {
  switch (r) {
    case Role::kSystem: return "system";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
    case Role::kTool: return "tool";
  }
  return "?";
}

absl::StatusOr<ChatTemplate> ChatTemplate::create(const Tokenizer& tokenizer) {
  ChatTemplate t(tokenizer);
  struct Need {
    const char* name;
    int32_t* id;
  };
  for (Need n : {Need{"<|im_start|>", &t.im_start_}, Need{"<|im_end|>", &t.im_end_},
                 Need{"<think>", &t.think_}, Need{"</think>", &t.end_think_},
                 Need{"<tool_call>", &t.tool_call_}, Need{"</tool_call>", &t.end_tool_call_},
                 Need{"<tool_response>", &t.tool_response_},
                 Need{"</tool_response>", &t.end_tool_response_}}) {
    auto id = tokenizer.special_id(n.name);
    if (!id) return absl::InvalidArgumentError(absl::StrCat("tokenizer has no special token ", n.name,
                                                            ", which the chat template needs"));
    *n.id = *id;
  }
  return t;
}

void ChatTemplate::append_text(std::vector<int32_t>& out, const std::string& text) const {
  std::vector<int32_t> ids = tok_->encode(text);
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<int32_t> ChatTemplate::render_message(const Message& m) const {
  std::vector<int32_t> out = {im_start_};
  append_text(out, role_name(m.role) + "\n");
  switch (m.role) {
    case Role::kAssistant:
      if (!m.thinking.empty()) {
        out.push_back(think_);
        append_text(out, m.thinking);
        out.push_back(end_think_);
      }
      append_text(out, m.content);
      for (const ToolCall& call : m.tool_calls) {
        out.push_back(tool_call_);
        // {"name": ..., "arguments": ...} in that order (the order models emit); the
        // agent loop appends generated tokens verbatim, so this matters for prompts.
        nlohmann::ordered_json body;
        body["name"] = call.name;
        body["arguments"] = call.arguments;
        append_text(out, body.dump());
        out.push_back(end_tool_call_);
      }
      break;
    case Role::kTool:
      out.push_back(tool_response_);
      append_text(out, m.content);
      out.push_back(end_tool_response_);
      break;
    default:
      append_text(out, m.content);
  }
  out.push_back(im_end_);
  return out;
}

std::vector<int32_t> ChatTemplate::render(std::span<const Message> messages,
                                          bool add_generation_prompt) const {
  std::vector<int32_t> out;
  for (const Message& m : messages) {
    std::vector<int32_t> part = render_message(m);
    out.insert(out.end(), part.begin(), part.end());
  }
  if (add_generation_prompt) {
    std::vector<int32_t> g = generation_prompt();
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

std::vector<int32_t> ChatTemplate::generation_prompt() const {
  std::vector<int32_t> out = {im_start_};
  append_text(out, "assistant\n");
  return out;
}

absl::StatusOr<Message> ChatTemplate::parse_assistant(std::span<const int32_t> g) const {
  Message m;
  m.role = Role::kAssistant;
  size_t i = 0;
  auto text_until = [&](int32_t stop) {
    std::vector<int32_t> ids;
    while (i < g.size() && g[i] != stop && g[i] != im_end_) ids.push_back(g[i++]);
    return tok_->decode(ids);
  };
  if (i < g.size() && g[i] == think_) {
    ++i;
    m.thinking = text_until(end_think_);
    if (i < g.size() && g[i] == end_think_) ++i;
  }
  m.content = text_until(tool_call_);
  int call_index = 0;
  while (i < g.size() && g[i] == tool_call_) {
    ++i;
    std::string body = text_until(end_tool_call_);
    if (i < g.size() && g[i] == end_tool_call_) ++i;
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string() ||
        (j.contains("arguments") && !j["arguments"].is_object()))
      return absl::InvalidArgumentError(absl::StrCat(
          "tool call ", call_index, " is not {\"name\": string, \"arguments\": object}: ", body));
    m.tool_calls.push_back({j["name"].get<std::string>(),
                            j.contains("arguments") ? j["arguments"] : nlohmann::json::object()});
    ++call_index;
    std::string between = text_until(tool_call_);  // text after a call is appended to content
    m.content += between;
  }
  return m;
}

}  // namespace interlace::model
