#include "interlace/serving/openai_api.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace interlace::serving {
namespace {

ApiError bad(std::string param, std::string message, int status = 400) {
  return ApiError{.status = status, .message = std::move(message), .param = std::move(param)};
}

// A number field in [lo, hi], or the error saying what it must be.
std::optional<ApiError> number(const json& body, const char* key, double lo, double hi, double& out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_number()) return bad(key, absl::StrCat(key, " must be a number"), 422);
  const double v = body[key].get<double>();
  if (v < lo || v > hi) return bad(key, absl::StrCat(key, " is ", v, "; it must be in [", lo, ", ", hi, "]"), 422);
  out = v;
  return std::nullopt;
}

std::optional<ApiError> integer(const json& body, const char* key, int64_t lo, int64_t hi, int64_t& out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_number_integer()) return bad(key, absl::StrCat(key, " must be an integer"), 422);
  const int64_t v = body[key].get<int64_t>();
  if (v < lo || v > hi) return bad(key, absl::StrCat(key, " is ", v, "; it must be in [", lo, ", ", hi, "]"), 422);
  out = v;
  return std::nullopt;
}

// A boolean field (absent or null: the default); anything else is a 422.
std::optional<ApiError> boolean(const json& body, const char* key, bool& out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_boolean()) return bad(key, absl::StrCat(key, " must be true or false"), 422);
  out = body[key].get<bool>();
  return std::nullopt;
}

// OpenAI content: a string, null, or a list of {"type": "text", "text": ...} parts.
std::optional<ApiError> content_text(const json& c, const std::string& where, std::string& out) {
  if (c.is_null()) return std::nullopt;
  if (c.is_string()) {
    out = c.get<std::string>();
    return std::nullopt;
  }
  if (!c.is_array()) return bad(where, "content must be a string, null or a list of text parts");
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
      return bad(absl::StrCat(where, "[", i, "]"), "only {\"type\": \"text\", \"text\": ...} content parts are supported");
    out += part["text"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

json error_body(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? json() : json(e.param)},
              {"code", e.code.empty() ? json() : json(e.code)}};
  return {{"error", err}};
}

std::optional<ApiError> parse_params(const json& body, int64_t default_max_tokens, GenerationParams& out) {
  rollout::SamplingParams& s = out.sampling;
  s.max_new_tokens = default_max_tokens;
  double temperature = 1.0, top_p = 1.0;
  if (auto e = number(body, "temperature", 0, 2, temperature)) return e;
  if (auto e = number(body, "top_p", 0, 1, top_p)) return e;
  if (body.contains("top_p") && top_p == 0) return bad("top_p", "top_p must be above 0", 422);
  s.temperature = float(temperature);
  s.top_p = float(top_p);
  int64_t top_k = 0;
  if (auto e = integer(body, "top_k", -1, 1 << 20, top_k)) return e;
  s.top_k = std::max<int64_t>(0, top_k);  // -1 (vLLM) and 0: no limit
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (auto e = integer(body, key, 1, 1 << 20, s.max_new_tokens)) return e;
    out.max_tokens_given = out.max_tokens_given || (body.contains(key) && !body[key].is_null());
  }
  int64_t seed = 0;
  if (auto e = integer(body, "seed", INT64_MIN, INT64_MAX, seed)) return e;
  s.seed = uint64_t(seed);
  if (auto e = integer(body, "n", 1, 16, out.n)) return e;
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      s.stop_strings.push_back(stop.get<std::string>());
    } else if (stop.is_array() && stop.size() <= 4 && std::all_of(stop.begin(), stop.end(), [](const json& x) { return x.is_string(); })) {
      for (const json& x : stop) s.stop_strings.push_back(x.get<std::string>());
    } else {
      return bad("stop", "stop must be a string or a list of up to 4 strings", 422);
    }
    for (const std::string& x : s.stop_strings)
      if (x.empty()) return bad("stop", "stop strings must not be empty", 422);
  }
  if (auto e = boolean(body, "stream", out.stream)) return e;
  if (body.contains("stream_options") && body["stream_options"].is_object())
    if (auto e = boolean(body["stream_options"], "include_usage", out.include_usage)) return e;
  // Chat: logprobs true/false and top_logprobs N. Completions (the legacy API): logprobs N, meaning both.
  if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    if (body["logprobs"].is_boolean()) {
      out.logprobs = body["logprobs"].get<bool>();
    } else if (body["logprobs"].is_number_integer()) {
      if (auto e = integer(body, "logprobs", 0, 20, s.top_logprobs)) return e;
      out.logprobs = true;
    } else {
      return bad("logprobs", "logprobs must be true or false (or, as in the completions API, a number of alternatives 0..20)", 422);
    }
  }
  if (body.contains("top_logprobs") && !body["top_logprobs"].is_null()) {
    if (auto e = integer(body, "top_logprobs", 0, 20, s.top_logprobs)) return e;
    if (s.top_logprobs > 0 && !out.logprobs) return bad("top_logprobs", "top_logprobs needs logprobs: true", 422);
  }
  if (auto e = boolean(body, "separate_reasoning", out.separate_reasoning)) return e;
  if (auto e = boolean(body, "ignore_eos", out.ignore_eos)) return e;
  return std::nullopt;
}

std::variant<ChatRequest, ApiError> parse_chat_request(const json& body, const ServedModel& m) {
  ChatRequest r;
  if (!body.is_object()) return bad("", "the request body must be a JSON object");
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty())
    return bad("messages", "messages must be a non-empty list");
  json messages = json::array();
  for (size_t i = 0; i < body["messages"].size(); ++i) {
    const json& in = body["messages"][i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!in.is_object() || !in.contains("role") || !in["role"].is_string())
      return bad(where, "each message must be an object with a role");
    const std::string role = in["role"];
    model::Message msg;
    if (role == "system" || role == "developer") msg.role = model::Role::kSystem;
    else if (role == "user") msg.role = model::Role::kUser;
    else if (role == "assistant") msg.role = model::Role::kAssistant;
    else if (role == "tool") msg.role = model::Role::kTool;
    else return bad(where + ".role", absl::StrCat("unknown role '", role, "' (system, developer, user, assistant, tool)"));
    if (auto e = content_text(in.value("content", json()), where + ".content", msg.content)) return *e;
    json out = {{"role", model::role_name(msg.role)}, {"content", msg.content}};
    if (msg.role == model::Role::kAssistant) {
      // Reasoning comes back under either name (vLLM renamed reasoning_content to reasoning).
      for (const char* key : {"reasoning_content", "reasoning"})
        if (in.contains(key) && in[key].is_string() && msg.thinking.empty()) msg.thinking = in[key].get<std::string>();
      if (!msg.thinking.empty()) out["reasoning_content"] = msg.thinking;
      if (in.contains("tool_calls") && !in["tool_calls"].is_null()) {
        if (!in["tool_calls"].is_array()) return bad(where + ".tool_calls", "tool_calls must be a list");
        out["tool_calls"] = json::array();
        for (size_t c = 0; c < in["tool_calls"].size(); ++c) {
          const json& call = in["tool_calls"][c];
          const std::string cw = absl::StrCat(where, ".tool_calls[", c, "]");
          if (!call.is_object() || !call.contains("function") || !call["function"].is_object() ||
              !call["function"].contains("name") || !call["function"]["name"].is_string())
            return bad(cw, "a tool call is {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
          const json& f = call["function"];
          json arguments = json::object();
          if (f.contains("arguments") && f["arguments"].is_string()) {
            arguments = json::parse(f["arguments"].get<std::string>(), nullptr, false);
            if (arguments.is_discarded() || !arguments.is_object())
              return bad(cw + ".function.arguments", "arguments must be a JSON object (as a string)");
          } else if (f.contains("arguments") && f["arguments"].is_object()) {
            arguments = f["arguments"];
          }
          msg.tool_calls.push_back({f["name"].get<std::string>(), nlohmann::json(arguments)});
          out["tool_calls"].push_back({{"type", "function"}, {"function", {{"name", f["name"]}, {"arguments", arguments}}}});
        }
      }
    }
    r.messages.push_back(std::move(msg));
    messages.push_back(std::move(out));
  }
  r.conversation = {{"messages", messages}, {"add_generation_prompt", true}};
  if (body.contains("tools") && !body["tools"].is_null()) {
    if (!body["tools"].is_array()) return bad("tools", "tools must be a list of {\"type\": \"function\", \"function\": {...}}");
    r.conversation["tools"] = body["tools"];
  }
  if (body.contains("tool_choice") && body["tool_choice"].is_string() && body["tool_choice"] != "auto" &&
      body["tool_choice"] != "none")
    return bad("tool_choice", "tool_choice may be \"auto\" or \"none\" (forcing a call is not supported)", 422);
  if (auto e = parse_params(body, std::min<int64_t>(m.max_model_len, 1024), r.params)) return *e;
  return r;
}

std::variant<std::vector<int32_t>, ApiError> chat_prompt(ChatRequest& r, const ServedModel& m) {
  std::vector<int32_t> prompt;
  if (m.text_template) {
    auto text = m.text_template->render(r.conversation);
    if (!text.ok()) return bad("messages", absl::StrCat("the model's chat template refused the conversation: ", text.status().message()));
    prompt = m.tokenizer->encode_with_specials(*text);
  } else {
    prompt = m.tokens_template->render(r.messages, /*add_generation_prompt=*/true);
  }
  if (int64_t(prompt.size()) < m.max_model_len && !r.params.max_tokens_given)
    r.params.sampling.max_new_tokens = std::min(r.params.sampling.max_new_tokens, m.max_model_len - int64_t(prompt.size()));
  if (int64_t(prompt.size()) + r.params.sampling.max_new_tokens > m.max_model_len)
    return ApiError{.status = 413,
                    .message = absl::StrCat("the prompt is ", prompt.size(), " tokens and max_tokens ", r.params.sampling.max_new_tokens,
                                            "; together more than this model's ", m.max_model_len, "-token context"),
                    .param = "messages",
                    .code = "context_length_exceeded"};
  return prompt;
}

json assistant_message(std::span<const int32_t> tokens, const ServedModel& m, bool separate_reasoning) {
  std::vector<int32_t> body(tokens.begin(), tokens.end());
  while (!body.empty() && std::find(m.stop_tokens.begin(), m.stop_tokens.end(), body.back()) != m.stop_tokens.end()) body.pop_back();
  json msg = {{"role", "assistant"}};
  if (!m.tokens_template) {
    msg["content"] = m.tokenizer->decode(body);
    return msg;
  }
  auto parsed = m.tokens_template->parse_assistant(body);
  if (!parsed.ok()) {  // a malformed tool call: what the model wrote, as text
    msg["content"] = m.tokenizer->decode(body);
    return msg;
  }
  std::string content = parsed->content;
  if (!separate_reasoning && !parsed->thinking.empty()) content = "<think>" + parsed->thinking + "</think>" + content;
  msg["content"] = content;
  if (separate_reasoning && !parsed->thinking.empty()) {
    msg["reasoning_content"] = parsed->thinking;
    msg["reasoning"] = parsed->thinking;
  }
  if (!parsed->tool_calls.empty()) {
    msg["tool_calls"] = json::array();
    for (size_t i = 0; i < parsed->tool_calls.size(); ++i)
      msg["tool_calls"].push_back({{"id", absl::StrCat("call_", i)},
                                   {"type", "function"},
                                   {"function", {{"name", parsed->tool_calls[i].name}, {"arguments", parsed->tool_calls[i].arguments.dump()}}}});
  }
  return msg;
}

ChatStreamer::ChatStreamer(const ServedModel& m, bool separate_reasoning, std::string call_id_prefix)
    : m_(m), separate_(separate_reasoning), call_id_prefix_(std::move(call_id_prefix)), decoder_(*m.tokenizer) {
  if (!m.tokens_template) return;  // no tags to split on: all of it is content
  auto id = [&](const char* name) { return m.tokenizer->special_id(name).value_or(-1); };
  think_ = id("<think>");
  end_think_ = id("</think>");
  call_ = id("<tool_call>");
  end_call_ = id("</tool_call>");
}

void ChatStreamer::text(std::vector<json>& out, const std::string& piece) {
  if (piece.empty()) return;
  if (mode_ == Mode::kReasoning && separate_) out.push_back({{"reasoning_content", piece}, {"reasoning", piece}});
  else out.push_back({{"content", piece}});
}

void ChatStreamer::flush(std::vector<json>& out) { text(out, decoder_.flush()); }

std::vector<json> ChatStreamer::push(std::span<const int32_t> tokens) {
  std::vector<json> out;
  const model::Tokenizer& tok = *m_.tokenizer;
  for (int32_t t : tokens) {
    if (std::find(m_.stop_tokens.begin(), m_.stop_tokens.end(), t) != m_.stop_tokens.end()) continue;
    if (mode_ == Mode::kStart) {
      mode_ = Mode::kContent;
      if (t == think_) {
        mode_ = Mode::kReasoning;
        if (!separate_) text(out, "<think>");
        continue;
      }
    }
    if (mode_ == Mode::kReasoning && t == end_think_) {
      flush(out);
      mode_ = Mode::kContent;
      if (!separate_) text(out, "</think>");
      continue;
    }
    if (mode_ == Mode::kContent && t == call_) {
      flush(out);
      mode_ = Mode::kToolCall;
      call_tokens_.clear();
      continue;
    }
    if (mode_ == Mode::kToolCall) {
      if (t != end_call_) {
        call_tokens_.push_back(t);
        continue;
      }
      mode_ = Mode::kContent;
      const json body = json::parse(tok.decode(call_tokens_), nullptr, false);
      if (body.is_object() && body.contains("name") && body["name"].is_string()) {
        const int index = calls_++;
        out.push_back({{"tool_calls", {{{"index", index},
                                        {"id", absl::StrCat(call_id_prefix_, index)},
                                        {"type", "function"},
                                        {"function", {{"name", body["name"]}, {"arguments", ""}}}}}}});
        const json args = body.contains("arguments") ? body["arguments"] : json::object();
        out.push_back({{"tool_calls", {{{"index", index}, {"function", {{"arguments", nlohmann::json(args).dump()}}}}}}});
      } else {  // not a call after all: what the model wrote, as text
        text(out, "<tool_call>" + tok.decode(call_tokens_) + "</tool_call>");
      }
      continue;
    }
    text(out, decoder_.push(t));
  }
  return out;
}

std::vector<json> ChatStreamer::finish() {
  std::vector<json> out;
  if (mode_ == Mode::kToolCall) text(out, "<tool_call>" + m_.tokenizer->decode(call_tokens_));  // cut off mid-call
  flush(out);
  return out;
}

std::string finish_reason(const std::string& worker_reason, bool tool_calls) {
  if (worker_reason == "length") return "length";
  if (tool_calls) return "tool_calls";
  return "stop";
}

}  // namespace interlace::serving
