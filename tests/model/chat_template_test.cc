#include "interlace/model/chat_template.h"

#include <gtest/gtest.h>

#include <random>

#include "support/random.h"

namespace interlace::model {
namespace {

TEST(ByteTokenizer, RoundTripsBytesAndNamesSpecials) {
  ByteTokenizer tok;
  std::string text = "h\xc3\xa9llo <think> \x01\xff";
  auto ids = tok.encode(text);
  EXPECT_EQ(ids.size(), text.size());  // special strings in text are plain bytes
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(*tok.special_id("<think>"), 259);
  EXPECT_EQ(tok.vocab_size(), 265);
  std::vector<int32_t> sp = {*tok.special_id("<|im_end|>")};
  EXPECT_EQ(tok.decode(sp), "<|im_end|>");
}

TEST(ChatTemplate, RendersTheDocumentedFormat) {
  ByteTokenizer tok;
  auto t = ChatTemplate::create(tok);
  ASSERT_TRUE(t.ok());
  std::vector<Message> conv = {
      {Role::kSystem, "be brief", "", {}},
      {Role::kUser, "2+3?", "", {}},
      {Role::kAssistant, "", "add them", {{"calc", {{"expr", "2+3"}}}}},
      {Role::kTool, "5", "", {}},
      {Role::kAssistant, "5", "the tool said 5", {}},
  };
  EXPECT_EQ(tok.decode(t->render(conv, false)),
            "<|im_start|>system\nbe brief<|im_end|>"
            "<|im_start|>user\n2+3?<|im_end|>"
            "<|im_start|>assistant\n<think>add them</think><tool_call>{\"name\":\"calc\",\"arguments\":{\"expr\":\"2+3\"}}</tool_call><|im_end|>"
            "<|im_start|>tool\n<tool_response>5</tool_response><|im_end|>"
            "<|im_start|>assistant\n<think>the tool said 5</think>5<|im_end|>");
}

// Rendering turns 1..N gives a prefix of turns 1..N+1, for random conversations,
// and no thinking is ever dropped from history.
TEST(ChatTemplate, AppendOnlyAndThinkingKept) {
  ByteTokenizer tok;
  auto t = ChatTemplate::create(tok);
  std::mt19937_64 rng(testing::fresh_seed());
  std::uniform_int_distribution<int> role(0, 3), len(0, 12), ch(32, 126);
  auto text = [&] {
    std::string s;
    for (int i = len(rng); i > 0; --i) s.push_back(static_cast<char>(ch(rng)));
    return s;
  };
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<Message> conv;
    std::vector<int32_t> prev;
    for (int turn = 0; turn < 8; ++turn) {
      Message m;
      m.role = static_cast<Role>(role(rng));
      m.content = text();
      if (m.role == Role::kAssistant) {
        m.thinking = "think-" + std::to_string(turn) + text();
        if (len(rng) % 2) m.tool_calls.push_back({"calc", {{"expr", text()}}});
      }
      conv.push_back(m);
      std::vector<int32_t> cur = t->render(conv, false);
      ASSERT_GE(cur.size(), prev.size());
      ASSERT_TRUE(std::equal(prev.begin(), prev.end(), cur.begin())) << "turn " << turn;
      // With the generation prompt, the rendering of the next assistant turn extends it too.
      std::vector<int32_t> with_prompt = t->render(conv, true);
      ASSERT_TRUE(std::equal(cur.begin(), cur.end(), with_prompt.begin()));
      const std::string decoded = tok.decode(cur);
      for (const Message& past : conv) {
        if (past.role == Role::kAssistant) {
          ASSERT_NE(decoded.find(past.thinking), std::string::npos);
        }
      }
      prev = cur;
    }
  }
}

TEST(ChatTemplate, ParsesGeneratedTurnsAndRejectsMalformedToolCalls) {
  ByteTokenizer tok;
  auto t = ChatTemplate::create(tok);
  Message m{Role::kAssistant, "answer", "reasoning", {{"calc", {{"expr", "1/0"}}}}};
  std::vector<int32_t> full = t->render_message(m);
  const size_t header = t->generation_prompt().size();
  std::vector<int32_t> generated(full.begin() + header, full.end());
  auto parsed = t->parse_assistant(generated);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, m);
  EXPECT_EQ(t->render_message(*parsed), full);

  std::vector<int32_t> bad = {*tok.special_id("<tool_call>")};
  auto body = tok.encode("{\"name\": 3}");
  bad.insert(bad.end(), body.begin(), body.end());
  bad.push_back(*tok.special_id("</tool_call>"));
  auto err = t->parse_assistant(bad);
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.status().message().find("tool call 0"), std::string::npos);

  ByteTokenizer no_specials(std::vector<std::string>{"<|endoftext|>"});
  EXPECT_FALSE(ChatTemplate::create(no_specials).ok());
}

}  // namespace
}  // namespace interlace::model
