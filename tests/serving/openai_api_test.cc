// The OpenAI shapes without sockets: what a model generated, rendered by
// Interlace's template, comes back as the message it was (reasoning, content,
// tool calls), whole and as streamed deltas that add up to it; requests that
// are wrong say which field.
#include "interlace/serving/openai_api.h"

#include <random>

#include "gtest/gtest.h"

namespace interlace::serving {
namespace {

class OpenAiApi : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = model::ChatTemplate::create(tokenizer_);
    ASSERT_TRUE(t.ok());
    template_.emplace(*t);
    served_.name = "tiny";
    served_.max_model_len = 256;
    served_.tokenizer = &tokenizer_;
    served_.tokens_template = &*template_;
    served_.stop_tokens = {*tokenizer_.special_id("<|im_end|>")};
  }
  // The tokens a model would generate for M after the generation prompt (its <|im_end|> included).
  std::vector<int32_t> generated(const model::Message& m) {
    std::vector<int32_t> all = template_->render_message(m);
    const size_t header = template_->generation_prompt().size();
    return {all.begin() + long(header), all.end()};
  }
  model::ByteTokenizer tokenizer_;
  std::optional<model::ChatTemplate> template_;
  ServedModel served_;
};

TEST_F(OpenAiApi, GeneratedReasoningContentAndToolCallsComeBackWholeAndStreamed) {
  const model::Message m{model::Role::kAssistant, "Let me compute. \xc3\xa9", "2+3 is small; use the calc tool",
                         {{"calc", {{"expression", "2+3"}}}, {"search", {{"q", "caf\xc3\xa9"}, {"n", 2}}}}};
  const std::vector<int32_t> tokens = generated(m);
  const json whole = assistant_message(tokens, served_, /*separate_reasoning=*/true);
  EXPECT_EQ(whole["content"], m.content);
  EXPECT_EQ(whole["reasoning_content"], m.thinking);
  EXPECT_EQ(whole["reasoning"], m.thinking);
  ASSERT_EQ(whole["tool_calls"].size(), 2u);
  EXPECT_EQ(whole["tool_calls"][1]["function"]["name"], "search");
  EXPECT_EQ(json::parse(whole["tool_calls"][1]["function"]["arguments"].get<std::string>()), json({{"n", 2}, {"q", "caf\xc3\xa9"}}));
  // Inline reasoning when asked.
  EXPECT_EQ(assistant_message(tokens, served_, false)["content"], "<think>" + m.thinking + "</think>" + m.content);

  // Streamed in pieces of random sizes (a multi-byte character split across pieces
  // too): the deltas add up to the same message.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    ChatStreamer streamer(served_, true, "call_");
    std::string content, reasoning;
    json calls = json::array();
    for (size_t at = 0; at < tokens.size();) {
      const size_t n = std::min(tokens.size() - at, size_t(1 + rng() % 5));
      std::vector<json> deltas = streamer.push(std::span<const int32_t>(tokens).subspan(at, n));
      at += n;
      if (at == tokens.size()) {
        auto rest = streamer.finish();
        deltas.insert(deltas.end(), rest.begin(), rest.end());
      }
      for (const json& d : deltas) {
        if (d.contains("content")) content += d["content"].get<std::string>();
        if (d.contains("reasoning_content")) {
          reasoning += d["reasoning_content"].get<std::string>();
          EXPECT_EQ(d["reasoning"], d["reasoning_content"]);
        }
        if (d.contains("tool_calls"))
          for (const json& c : d["tool_calls"]) {
            const size_t index = c["index"];
            if (index >= calls.size()) {  // the first delta of a call: id, type and name
              EXPECT_TRUE(c.contains("id") && c["type"] == "function") << c.dump();
              calls.push_back({{"name", c["function"]["name"]}, {"arguments", ""}});
            }
            calls[index]["arguments"] = calls[index]["arguments"].get<std::string>() + c["function"].value("arguments", "");
          }
      }
    }
    EXPECT_EQ(content, m.content);
    EXPECT_EQ(reasoning, m.thinking);
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_EQ(calls[0]["name"], "calc");
    EXPECT_EQ(json::parse(calls[0]["arguments"].get<std::string>()), json({{"expression", "2+3"}}));
    EXPECT_TRUE(streamer.saw_tool_call());
  }
}

TEST_F(OpenAiApi, AnAssistantMessageSentBackRendersToTheTokensTheModelGenerated) {
  // Interleaved thinking: the client returns reasoning and tool calls as OpenAI
  // shapes; the prompt holds exactly what the model generated, so the cache hits.
  const model::Message m{model::Role::kAssistant, "", "think first", {{"calc", {{"expression", "7*6"}}}}};
  const json answer = assistant_message(generated(m), served_, true);
  for (const char* reasoning_key : {"reasoning_content", "reasoning"}) {
    json back = answer;
    back.erase("reasoning_content");
    back.erase("reasoning");
    back[reasoning_key] = m.thinking;
    const json body = {{"messages", {{{"role", "user"}, {"content", "What is 7*6?"}}, back}}};
    auto parsed = parse_chat_request(body, served_);
    ASSERT_TRUE(std::holds_alternative<ChatRequest>(parsed)) << std::get<ApiError>(parsed).message;
    const std::vector<model::Message> want = {{model::Role::kUser, "What is 7*6?", "", {}}, m};
    auto prompt = chat_prompt(std::get<ChatRequest>(parsed), served_);
    ASSERT_TRUE(std::holds_alternative<std::vector<int32_t>>(prompt));
    EXPECT_EQ(std::get<std::vector<int32_t>>(prompt), template_->render(want, true)) << reasoning_key;
  }
}

TEST_F(OpenAiApi, BadFieldsAreNamedWithTheirStatus) {
  auto error_of = [&](const json& body) {
    auto parsed = parse_chat_request(body, served_);
    if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
    auto prompt = chat_prompt(std::get<ChatRequest>(parsed), served_);
    if (auto* e = std::get_if<ApiError>(&prompt)) return *e;
    return ApiError{.status = 200, .message = "", .param = ""};
  };
  const json user = {{"role", "user"}, {"content", "hi"}};
  EXPECT_EQ(error_of({{"messages", json::array()}}).param, "messages");
  EXPECT_EQ(error_of({{"messages", {user, {{"role", "assistant"}, {"tool_calls", {{{"function", {{"name", "f"}, {"arguments", "not json"}}}}}}}}}}).param,
            "messages[1].tool_calls[0].function.arguments");
  EXPECT_EQ(error_of({{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}).param, "messages[0].content[0]");
  const ApiError hot = error_of({{"messages", {user}}, {"temperature", 3}});
  EXPECT_EQ(hot.status, 422);
  EXPECT_EQ(hot.param, "temperature");
  EXPECT_EQ(error_of({{"messages", {user}}, {"stop", {"a", "b", "c", "d", "e"}}}).param, "stop");
  EXPECT_EQ(error_of({{"messages", {user}}, {"tool_choice", "required"}}).status, 422);
  const ApiError long_one = error_of({{"messages", {user}}, {"max_tokens", 250}});
  EXPECT_EQ(long_one.status, 413);
  EXPECT_EQ(long_one.code, "context_length_exceeded");
  EXPECT_EQ(error_of({{"messages", {user}}, {"max_tokens", 8}}).status, 200);
}

}  // namespace
}  // namespace interlace::serving
