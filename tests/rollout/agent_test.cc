// Environments, the calculator tool's evaluator, gold demonstrations and the
// agent loop's token bookkeeping (append-only history, loss masks, limits).
#include "interlace/rollout/agent.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "interlace/model/weights.h"
#include "model/test_configs.h"

namespace interlace::rollout {
namespace {

TEST(Calculator, EvaluatesSafely) {
  EXPECT_EQ(*evaluate_expression("17+5*12"), 77);
  EXPECT_EQ(*evaluate_expression(" (2 + 3) * 4 - -1 "), 21);
  EXPECT_EQ(*evaluate_expression("84/7"), 12);
  for (const char* bad : {"1/0", "7/2", "9999999999*9999999999", "9223372036854775807+1", "2+", "abc", "(1+2",
                          "99999999999999999999", "1 2"}) {
    auto r = evaluate_expression(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_NE(std::string(evaluate_expression("1/0").status().message()).find("division by zero"), std::string::npos);
  EXPECT_FALSE(evaluate_expression(std::string(300, '1')).ok());
  EXPECT_FALSE(evaluate_expression(std::string(40, '(') + "1" + std::string(40, ')')).ok());
  EXPECT_EQ(*evaluate_expression(std::string(20, '(') + "1" + std::string(20, ')')), 1);
}

TEST(Environments, RegistryAndOptionErrors) {
  for (const auto& name : environment_names()) EXPECT_TRUE(make_environment(name).ok()) << name;
  auto e = make_environment("chess");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(std::string(e.status().message()).find("calculator"), std::string::npos);
  EXPECT_FALSE(make_environment("kv-retrieval:pairs=abc").ok());
  EXPECT_FALSE(make_environment("kv-retrieval:depth=3").ok());
  EXPECT_FALSE(make_environment("kv-retrieval:pairs=3,hops=5").ok());
  EXPECT_TRUE(make_environment("kv-retrieval:pairs=100,hops=4").ok());
  EXPECT_TRUE(make_environment("kv-retrieval:pairs=12,key_len=1").ok());
  EXPECT_FALSE(make_environment("kv-retrieval:pairs=13,key_len=1").ok());  // 14 of 26 letters would be keys
  EXPECT_FALSE(make_environment("kv-retrieval:key_len=0").ok());
  EXPECT_FALSE(make_environment("kv-retrieval:short_prompt=2").ok());
  EXPECT_FALSE(make_environment("calculator:x=1").ok());
  EXPECT_FALSE(make_environment("calculator:max_number=1").ok());
  EXPECT_FALSE(make_environment("calculator:short_prompt=2").ok());
  EXPECT_FALSE(make_environment("calculator:demo_guess=101").ok());
  EXPECT_FALSE(make_environment("calculator:guess_uniform=2").ok());
}

// demo_guess=P: about P% of demonstrations answer at once with a wrong guess
// (reward 0), the rest are the usual tool-using ones; the problems themselves
// do not change with the rate. By default a guess is near the answer; with
// guess_uniform=1 the guesses do not follow the answer.
TEST(Environments, CalculatorDemoGuessMakesThatShareOfDemonstrationsWrong) {
  auto plain = *make_environment("calculator:max_number=5,short_prompt=1");
  for (const bool uniform : {false, true}) {
    auto noisy = *make_environment(std::string("calculator:max_number=5,short_prompt=1,demo_guess=30") +
                                   (uniform ? ",guess_uniform=1" : ""));
    int guesses = 0;
    const int n = 2000;
    std::vector<double> guessed, answers;
    for (uint64_t seed = 0; seed < n; ++seed) {
      auto a = plain->episode(seed), b = noisy->episode(seed);
      ASSERT_EQ(a->prompt(), b->prompt());
      const auto demo = b->demonstration();
      EnvReply r = b->on_assistant(demo.back());
      ASSERT_TRUE(r.done);
      if (demo.size() == 1) {
        ++guesses;
        EXPECT_TRUE(demo[0].tool_calls.empty());
        EXPECT_EQ(b->reward(), 0.0) << "seed " << seed << ": a guess must be wrong";
        guessed.push_back(std::stod(demo[0].content.substr(demo[0].content.find(':') + 1)));
        answers.push_back(std::stod(a->demonstration().back().content.substr(8)));  // "Answer: N"
      } else {
        EXPECT_EQ(demo, a->demonstration());
        EXPECT_EQ(b->reward(), 1.0);
      }
    }
    EXPECT_NEAR(guesses, 0.3 * n, 4 * std::sqrt(0.3 * 0.7 * n));  // binomial, 4 standard deviations
    // Pearson correlation of guess and answer (0.04 standard error at ~600 guesses).
    const double k = double(guessed.size());
    double mg = 0, ma = 0;
    for (size_t i = 0; i < guessed.size(); ++i) mg += guessed[i] / k, ma += answers[i] / k;
    double sgg = 0, saa = 0, sga = 0;
    for (size_t i = 0; i < guessed.size(); ++i) {
      sgg += (guessed[i] - mg) * (guessed[i] - mg);
      saa += (answers[i] - ma) * (answers[i] - ma);
      sga += (guessed[i] - mg) * (answers[i] - ma);
    }
    const double r = sga / std::sqrt(sgg * saa);
    if (uniform) {
      EXPECT_LT(std::abs(r), 0.2) << "uniform guesses follow the answers";
    } else {
      EXPECT_GT(r, 0.8) << "near guesses do not follow the answers";
    }
  }
}

// Following the context's lines from the start key, hop by hop, ends at the
// demonstration's answer: every key has one line, whatever the key length.
TEST(Environments, KvRetrievalChainsFollowTheContext) {
  for (const std::string spec : {"kv-retrieval:pairs=12,hops=3,key_len=1,short_prompt=1", "kv-retrieval:pairs=12,hops=2",
                                 "kv-retrieval:pairs=30,hops=4,key_len=2"}) {
    auto env = make_environment(spec);
    ASSERT_TRUE(env.ok()) << spec;
    for (uint64_t seed = 1; seed <= 50; ++seed) {
      auto ep = (*env)->episode(seed);
      const std::string user = ep->prompt().back().content;
      std::map<std::string, std::string> lines;
      size_t at = 0;
      for (size_t nl; (nl = user.find('\n', at)) != std::string::npos; at = nl + 1) {
        const std::string line = user.substr(at, nl - at);
        if (const size_t colon = line.find(": "); colon != std::string::npos && line.find(' ') == colon + 1) {
          EXPECT_TRUE(lines.emplace(line.substr(0, colon), line.substr(colon + 2)).second) << spec << ": a key twice";
        }
      }
      const std::string path = ep->demonstration().back().thinking;  // "a -> b -> c"
      std::string key = path.substr(0, path.find(' '));
      EXPECT_NE(user.find(key), std::string::npos);
      const int hops = std::stoi(spec.substr(spec.find("hops=") + 5));
      for (int h = 0; h < hops; ++h) {
        ASSERT_TRUE(lines.contains(key)) << spec << " seed " << seed << ": no line for " << key;
        key = lines[key];
      }
      EXPECT_EQ("Answer: " + key, ep->demonstration().back().content) << spec << " seed " << seed;
    }
  }
}

// Playing an episode's own demonstration earns full reward, and the replies the
// environment gives are the ones the demonstration shows.
TEST(Environments, DemonstrationsEarnTheReward) {
  for (const std::string spec : {"calculator", "calculator:max_number=5,short_prompt=1", "calculator:notes=12",
                                 "kv-retrieval:pairs=40,hops=3", "kv-retrieval:pairs=12,hops=3,key_len=1,short_prompt=1",
                                 "guess-number:max=100"}) {
    auto env = make_environment(spec);
    ASSERT_TRUE(env.ok());
    for (uint64_t seed : {1ull, 2ull, 77ull}) {
      auto ep = (*env)->episode(seed);
      const auto demo = ep->demonstration();
      int turns = 0;
      bool done = false;
      for (size_t i = 0; i < demo.size(); ++i) {
        if (demo[i].role != model::Role::kAssistant) continue;
        ++turns;
        EnvReply r = ep->on_assistant(demo[i]);
        for (size_t j = 0; j < r.messages.size(); ++j) {
          ASSERT_LT(i + 1 + j, demo.size());
          EXPECT_EQ(r.messages[j], demo[i + 1 + j]) << spec;
        }
        done = r.done;
      }
      EXPECT_TRUE(done) << spec;
      const double want = spec.starts_with("guess") ? 1.0 / turns : 1.0;
      EXPECT_DOUBLE_EQ(ep->reward(), want) << spec << " seed " << seed;
    }
  }
  // notes=N: N distractor lines before the same question; the demonstration
  // (the problem and its answer) is the episode's without notes.
  auto noted = *make_environment("calculator:max_number=5,short_prompt=1,notes=7");
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const auto with = noted->episode(seed), without = (*make_environment("calculator:max_number=5,short_prompt=1"))->episode(seed);
    const std::string q = with->prompt()[1].content, plain = without->prompt()[1].content;
    ASSERT_TRUE(q.ends_with(plain)) << q;
    EXPECT_EQ(std::count(q.begin(), q.end(), '\n'), 7);
    EXPECT_EQ(q.substr(0, 6), "Note: ");
    EXPECT_EQ(with->demonstration(), without->demonstration());
  }
  // max_number bounds every number the question shows (the marbles total is a product of two).
  auto small = *make_environment("calculator:max_number=5,short_prompt=1");
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const auto prompt = small->episode(seed)->prompt();
    EXPECT_LT(prompt[0].content.size(), 60u);
    std::string q = prompt[1].content;
    for (size_t i = 0; i < q.size();) {
      if (!std::isdigit(static_cast<unsigned char>(q[i]))) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < q.size() && std::isdigit(static_cast<unsigned char>(q[j]))) ++j;
      EXPECT_LE(std::stoi(q.substr(i, j - i)), q.find("marbles") != std::string::npos ? 25 : 5) << q;
      i = j;
    }
  }
  // Wrong answers earn nothing; a malformed call gets an error message and the episode goes on.
  auto calc = (*make_environment("calculator"))->episode(5);
  EnvReply r = calc->on_assistant(absl::InvalidArgumentError("tool call 0 is not {...}"));
  EXPECT_FALSE(r.done);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, model::Role::kTool);
  EXPECT_NE(r.messages[0].content.find("error"), std::string::npos);
  model::Message m;
  m.role = model::Role::kAssistant;
  m.tool_calls.push_back({"calc", {{"expression", "1/0"}}});
  r = calc->on_assistant(m);
  EXPECT_EQ(r.messages.at(0).content.rfind("error: division by zero", 0), 0u);
  m.tool_calls = {};
  m.content = "Answer: -12345";
  EXPECT_TRUE(calc->on_assistant(m).done);
  EXPECT_EQ(calc->reward(), 0.0);
}

TEST(Environments, KvRetrievalScalesToTensOfThousandsOfTokens) {
  auto env = make_environment("kv-retrieval:pairs=3000,hops=4");
  ASSERT_TRUE(env.ok());
  model::ByteTokenizer tok;
  auto tmpl = model::ChatTemplate::create(tok);
  auto ep = (*env)->episode(3);
  const Demonstration d = render_demonstration(*tmpl, *ep);
  EXPECT_GT(d.tokens.size(), 30000u);
}

TEST(Demonstration, MaskCoversExactlyWhatTheModelGenerates) {
  model::ByteTokenizer tok;
  auto tmpl = model::ChatTemplate::create(tok);
  auto ep = (*make_environment("calculator"))->episode(9);
  const Demonstration d = render_demonstration(*tmpl, *ep);
  ASSERT_EQ(d.tokens.size(), d.loss_mask.size());
  // The tokens are the rendered conversation, message by message.
  std::vector<model::Message> all = ep->prompt();
  for (const auto& m : ep->demonstration()) all.push_back(m);
  EXPECT_EQ(d.tokens, tmpl->render(all, false));
  // Masked spans: each starts right after an assistant header and ends with <|im_end|>.
  const std::vector<int32_t> header = tmpl->generation_prompt();
  int spans = 0;
  for (size_t i = 0; i < d.tokens.size(); ++i) {
    if (d.loss_mask[i] && (i == 0 || !d.loss_mask[i - 1])) {
      ++spans;
      ASSERT_GE(i, header.size());
      EXPECT_TRUE(std::equal(header.begin(), header.end(), d.tokens.begin() + (i - header.size())));
    }
    if (d.loss_mask[i] && (i + 1 == d.tokens.size() || !d.loss_mask[i + 1])) {
      EXPECT_EQ(d.tokens[i], tmpl->end_of_turn());
    }
  }
  EXPECT_EQ(spans, 2);  // the tool call turn and the answer turn
}

// A model that always says <|im_end|> at once: all layer outputs are zero, so
// the final hidden state is the (constant) embedding and the LM head picks
// <|im_end|>. Deterministic multi-turn episodes without training a model.
std::shared_ptr<model::Model> im_end_model(int32_t im_end) {
  nlohmann::json j = testing::llama_json();
  j["vocab_size"] = 272;
  j["tie_word_embeddings"] = false;
  const model::ModelConfig c = testing::parse_or_die(j);
  model::NamedTensors w = model::random_weights(c, 1, 0.1f);
  for (auto& [name, t] : w) {
    if (name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos)
      for (float& x : t.span_f32()) x = 0.0f;
    if (name == "model.embed_tokens.weight")
      for (float& x : t.span_f32()) x = 1.0f;
    if (name == "lm_head.weight") {
      for (float& x : t.span_f32()) x = 0.0f;
      for (int64_t d = 0; d < c.hidden_size; ++d) t.f32()[int64_t(im_end) * c.hidden_size + d] = 1.0f;
    }
  }
  return std::shared_ptr<model::Model>(std::move(*model::Model::from_tensors(c, w, model::PrecisionProfile{})));
}

void check_bookkeeping(const Trajectory& t, const model::ChatTemplate& tmpl) {
  const size_t n = t.tokens.size();
  ASSERT_EQ(t.loss_mask.size(), n);
  ASSERT_EQ(t.logprobs.size(), n);
  ASSERT_EQ(t.versions.size(), n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(t.loss_mask[i] == 1, !std::isnan(t.logprobs[i])) << i;
    EXPECT_EQ(t.loss_mask[i] == 1, t.versions[i] >= 0) << i;
  }
  // Turns tile the sequence; generated tokens only inside assistant turns, after the header.
  int64_t at = 0;
  for (const TurnSpan& s : t.turns) {
    EXPECT_EQ(s.start, at);
    at = s.end;
    for (int64_t i = s.start; i < s.end; ++i)
      if (t.loss_mask[i]) {
        EXPECT_EQ(s.role, "assistant");
        EXPECT_GE(i, s.start + int64_t(tmpl.generation_prompt().size()));
      }
  }
  EXPECT_EQ(at, int64_t(n));
}

TEST(AgentLoop, TurnsAppendGeneratedTokensAndRepliesWithMasksAndLimits) {
  model::ByteTokenizer tok;
  auto tmpl = model::ChatTemplate::create(tok);
  const int32_t im_end = tmpl->end_of_turn();
  auto m = im_end_model(im_end);
  Engine engine(m, 7, {.max_running = 4});
  AgentLoop loop(engine, *tmpl, tok, {.max_turns = 3, .max_turn_tokens = 8, .max_episode_tokens = 4096});
  std::vector<EpisodeSpec> specs;
  auto guess = make_environment("guess-number");
  auto calc = make_environment("calculator");
  for (int i = 0; i < 3; ++i) {
    EpisodeSpec s;
    s.episode = (i < 2 ? *guess : *calc)->episode(i);
    s.task_seed = i;
    s.group = i;
    specs.push_back(std::move(s));
  }
  std::vector<std::string> seen;
  auto out = loop.run(std::move(specs), [&](const Trajectory& t) { seen.push_back(t.finish_reason); });
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(seen.size(), 3u);
  for (const Trajectory& t : out) check_bookkeeping(t, *tmpl);
  // guess-number: every turn is just <|im_end|>, the environment asks again, three turns.
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(out[i].finish_reason, "max_turns");
    EXPECT_EQ(out[i].generated_tokens(), 3);
    int user_replies = 0;
    for (const auto& s : out[i].turns) user_replies += s.role == "user";
    EXPECT_EQ(user_replies, 1 + 3);  // the question, then one reply per turn
    // The whole sequence is the rendered conversation: nothing re-tokenised.
    auto ep = (*guess)->episode(i);
    std::vector<int32_t> want;
    for (const auto& msg : ep->prompt()) {
      auto r = tmpl->render_message(msg);
      want.insert(want.end(), r.begin(), r.end());
    }
    EXPECT_TRUE(std::equal(want.begin(), want.end(), out[i].tokens.begin()));
    for (size_t k = 0; k < out[i].tokens.size(); ++k)
      if (out[i].loss_mask[k]) {
        EXPECT_EQ(out[i].tokens[k], im_end);
        EXPECT_EQ(out[i].versions[k], 7);
      }
  }
  // calculator: an empty final answer ends the episode with reward 0.
  EXPECT_EQ(out[2].finish_reason, "done");
  EXPECT_EQ(out[2].reward, 0.0);

  // A random model rambles: the turn limit ends the episode.
  nlohmann::json j = testing::minimax_json();
  j["vocab_size"] = 272;
  const model::ModelConfig c2 = testing::parse_or_die(j);
  auto rnd = std::shared_ptr<model::Model>(
      std::move(*model::Model::from_tensors(c2, model::random_weights(c2, 3, 0.3f), model::PrecisionProfile{})));
  Engine e2(rnd, 0, {.vocab_limit = 256});  // bytes only: never a special token
  AgentLoop l2(e2, *tmpl, tok, {.max_turns = 3, .max_turn_tokens = 6, .max_episode_tokens = 4096});
  std::vector<EpisodeSpec> two;
  two.push_back({(*calc)->episode(1), 1, 0, 0, {}, {}});
  // A task's own limits (a worker runs each task under what the task says).
  two.push_back({(*calc)->episode(1), 1, 0, 1, {}, AgentLimits{.max_turns = 1, .max_turn_tokens = 3}});
  auto r2 = l2.run(std::move(two));
  EXPECT_EQ(r2[0].finish_reason, "max_turn_tokens");
  EXPECT_EQ(r2[0].generated_tokens(), 6);
  check_bookkeeping(r2[0], *tmpl);
  EXPECT_EQ(r2[1].finish_reason, "max_turn_tokens");
  EXPECT_EQ(r2[1].generated_tokens(), 3);
  check_bookkeeping(r2[1], *tmpl);
}

}  // namespace
}  // namespace interlace::rollout
