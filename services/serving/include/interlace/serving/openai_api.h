// The OpenAI API's shapes, apart from any socket: requests parsed and checked
// (each problem an OpenAI error object with its HTTP status and the
// parameter at fault), conversations turned into prompt tokens, and what a
// model generated turned back into messages, whole or as streamed deltas
// (reasoning split from content, tool calls as OpenAI streams them).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "interlace/model/bpe_tokenizer.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/jinja_chat_template.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rollout/sampling.h"
#include "nlohmann/json.hpp"

namespace interlace::serving {

using json = nlohmann::ordered_json;

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault, if one is
  std::string code;
};
json error_body(const ApiError& e);

// The sampling fields chat and completions share.
struct GenerationParams {
  rollout::SamplingParams sampling;
  int64_t n = 1;
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  bool logprobs = false;            // the sampled token's log-prob with each token (sampling.top_logprobs: and alternatives)
  bool separate_reasoning = true;   // false: <think>...</think> stays inline in content
  bool ignore_eos = false;          // vLLM's: go on past end-of-turn tokens (benchmarks, tests)
  bool max_tokens_given = false;    // else the default shrinks to what the context leaves
};
// DEFAULT_MAX_TOKENS when the request names none.
std::optional<ApiError> parse_params(const json& body, int64_t default_max_tokens, GenerationParams& out);

// The model a gateway serves and how it renders chats.
struct ServedModel {
  std::string name;
  int64_t max_model_len = 8192;  // prompt + generated tokens
  const model::Tokenizer* tokenizer = nullptr;
  const model::ChatTemplate* tokens_template = nullptr;       // Interlace's format, token by token (parses output)
  const model::JinjaChatTemplate* text_template = nullptr;    // the model's own tokenizer_config.json template, if any
  std::vector<int32_t> stop_tokens;                           // end of turn, end of text
};

struct ChatRequest {
  json conversation;  // {"messages": [...], "tools": [...]} as the template sees them
  std::vector<model::Message> messages;
  GenerationParams params;
};
std::variant<ChatRequest, ApiError> parse_chat_request(const json& body, const ServedModel& m);
// The prompt the model sees. With the model's own Jinja template, its text
// with special tokens recognized; otherwise Interlace's rendering, whose
// tokens for an assistant message are exactly what the model generated (so a
// client sending back reasoning and tool calls hits the prefix cache). Without
// max_tokens in the request, it becomes what the context leaves (at most 1024).
std::variant<std::vector<int32_t>, ApiError> chat_prompt(ChatRequest& r, const ServedModel& m);

// What a model generated (its final stop token included or not) as an
// assistant message: {"role", "content", "reasoning_content", "reasoning", "tool_calls"}.
json assistant_message(std::span<const int32_t> tokens, const ServedModel& m, bool separate_reasoning);

// Streamed chat: the deltas for each new piece of output, in OpenAI's chunk
// "delta" shape. Text is held back while a UTF-8 character is incomplete; a
// tool call is sent when its </tool_call> arrives (first its index, id, type
// and name, then its arguments).
class ChatStreamer {
 public:
  ChatStreamer(const ServedModel& m, bool separate_reasoning, std::string call_id_prefix);
  std::vector<json> push(std::span<const int32_t> tokens);
  std::vector<json> finish();
  bool saw_tool_call() const { return calls_ > 0; }

 private:
  enum class Mode { kStart, kReasoning, kContent, kToolCall };
  void text(std::vector<json>& out, const std::string& piece);
  void flush(std::vector<json>& out);
  const ServedModel& m_;
  bool separate_;
  std::string call_id_prefix_;
  // The special tokens that switch modes (-1 where the format has none), looked up once.
  int32_t think_ = -1, end_think_ = -1, call_ = -1, end_call_ = -1;
  Mode mode_ = Mode::kStart;
  model::IncrementalDecoder decoder_;
  std::vector<int32_t> call_tokens_;
  int calls_ = 0;
};

// "stop" | "length" | "tool_calls" from the worker's reason.
std::string finish_reason(const std::string& worker_reason, bool tool_calls);

}  // namespace interlace::serving
