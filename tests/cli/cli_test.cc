// The interlace binary, run as a user runs it: exit codes, messages, outputs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "interlace/learner/checkpoint.h"
#include "interlace/learner/sft.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/safetensors.h"
#include "interlace/model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;

struct CliRun {
  int code;
  std::string out;  // stdout and stderr together
};

CliRun run(const std::string& args, bool with_stderr = true) {
  const std::string cmd = std::string(INTERLACE_BIN) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("interlace_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "tiny").string();
    const CliRun r = run("model init --config " + std::string(INTERLACE_SOURCE_DIR) +
                      "/examples/models/tiny-hybrid.json --out " + model_ + " --seed 3");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string write(const std::string& name, const std::string& text) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  static inline fs::path dir_;
  static inline std::string model_;
};

TEST_F(Cli, HelpTeachesAndBadUsageExitsTwo) {
  CliRun help = run("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("model init"), std::string::npos);
  CliRun score_help = run("model score --help");
  EXPECT_NE(score_help.out.find("log p(token_i"), std::string::npos);
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("model frobnicate").code, 2);
  EXPECT_EQ(run("model score --model x").code, 2);  // --input missing
  EXPECT_EQ(run("bench decode -o yaml").code, 2);
}

// `train sft --lr nan` once exited 0 with every weight NaN. Every numeric
// option refuses NaN and infinities as bad usage, naming the option.
TEST_F(Cli, NonFiniteNumbersAreBadUsage) {
  const std::string data = write("one.jsonl", "{\"tokens\": [1, 2, 3, 4], \"loss_mask\": [0, 1, 1, 1]}\n");
  for (const char* value : {"nan", "NaN", "inf", "-inf", "infinity", "1e999"}) {
    const CliRun sft = run("train sft --model " + model_ + " --data " + data + " --out " + (dir_ / "nan").string() +
                           " --steps 1 --lr " + value);
    EXPECT_EQ(sft.code, 2) << value << ": " << sft.out;
    EXPECT_NE(sft.out.find("--lr"), std::string::npos) << sft.out;
    if (std::string(value) == "nan" || std::string(value) == "NaN") {  // infinities may meet --lr's own range first
      EXPECT_NE(sft.out.find("is not a finite number"), std::string::npos) << sft.out;
    }
    const CliRun gen = run("model generate --model " + model_ + " --prompt hi --temperature " + value);
    EXPECT_EQ(gen.code, 2) << value << ": " << gen.out;
  }
  EXPECT_FALSE(fs::exists(dir_ / "nan"));
}

// Inputs too big to hold are refused with the reason before they are held:
// a token line of 2M tokens (over the 1M bound), and a config that passes each
// size cap but whose random weights would not fit in this machine's memory.
TEST_F(Cli, OversizedInputsFailWithAReason) {
  std::string line = "{\"tokens\": [1";
  for (int i = 1; i < (2 << 20); ++i) line += ",1";
  line += "], \"loss_mask\": [0]}\n";
  const std::string data = write("long.jsonl", line);
  const CliRun sft = run("train sft --model " + model_ + " --data " + data + " --out " + (dir_ / "long").string());
  EXPECT_EQ(sft.code, 1) << sft.out.substr(0, 300);
  EXPECT_NE(sft.out.find("long.jsonl:1: 2097152 tokens; at most 1048576"), std::string::npos) << sft.out.substr(0, 300);
  const std::string config = write("big.json", R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 65536,
      "hidden_size": 16384, "intermediate_size": 65536, "num_hidden_layers": 32, "num_attention_heads": 128})");
  const CliRun init = run("model init --config " + config + " --out " + (dir_ / "big").string());
  EXPECT_EQ(init.code, 1) << init.out;
  EXPECT_NE(init.out.find("to initialise; this machine has"), std::string::npos) << init.out;
}

TEST_F(Cli, ScoreWritesOneLinePerInputWithNullFirstAndPathsAgree) {
  const std::string in = write("in.jsonl", "{\"tokens\":[256,72,105,33,10]}\n\n{\"tokens\":[1,2]}\n");
  const std::string a = (dir_ / "a.jsonl").string(), b = (dir_ / "b.jsonl").string();
  ASSERT_EQ(run("model score --model " + model_ + " --input " + in + " --output " + a).code, 0);
  CliRun dec = run("model score --model " + model_ + " --input " + in + " --output " + b + " --path decode");
  ASSERT_EQ(dec.code, 0) << dec.out;
  std::ifstream fa(a), fb(b);
  std::string la, lb;
  int lines = 0;
  while (std::getline(fa, la) && std::getline(fb, lb)) {
    auto ja = nlohmann::json::parse(la)["logprobs"], jb = nlohmann::json::parse(lb)["logprobs"];
    ASSERT_TRUE(ja[0].is_null());
    ASSERT_EQ(ja.size(), lines == 0 ? 5u : 2u);
    for (size_t i = 1; i < ja.size(); ++i) {
      EXPECT_LT(ja[i].get<double>(), 0.0);
      EXPECT_NEAR(ja[i].get<double>(), jb[i].get<double>(), 1e-4);
    }
    ++lines;
  }
  EXPECT_EQ(lines, 2);
}

TEST_F(Cli, BadInputExitsOneNamingWhatIsWrong) {
  CliRun r = run("model score --model /nonexistent/model --input /dev/null");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/nonexistent/model"), std::string::npos) << r.out;

  const std::string oov = write("oov.jsonl", "{\"tokens\":[1,2]}\n{\"tokens\":[1,99999]}\n");
  r = run("model score --model " + model_ + " --input " + oov);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("oov.jsonl:2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("99999"), std::string::npos) << r.out;

  r = run("model score --model " + model_ + " --input " + write("bad.jsonl", "[1,2,3]\n"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad.jsonl:1"), std::string::npos) << r.out;

  // A model directory with a malformed config.
  fs::create_directories(dir_ / "badcfg");
  write("badcfg/config.json", "{\"architectures\": [\"MiniMaxForCausalLM\"], \"vocab_size\": 10}");
  r = run("model score --model " + (dir_ / "badcfg").string() + " --input " + oov);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("config.json"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hidden_size"), std::string::npos) << r.out;

  // A corrupt safetensors file: the header claims more bytes than the file has.
  fs::create_directories(dir_ / "corrupt");
  fs::copy_file(fs::path(model_) / "config.json", dir_ / "corrupt" / "config.json");
  {
    std::ofstream f(dir_ / "corrupt" / "model.safetensors", std::ios::binary);
    uint64_t len = 1000;
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << "{}";
  }
  r = run("model score --model " + (dir_ / "corrupt").string() + " --input " + oov);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;

  r = run("model init --config " + (dir_ / "badcfg" / "config.json").string() + " --out " +
          (dir_ / "x").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("hidden_size"), std::string::npos) << r.out;

  r = run("model score --model " + model_ + " --input " + write("empty.jsonl", ""));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("no token lines"), std::string::npos) << r.out;

  r = run("model score --model " + model_ + " --input " + oov + " --precision fp7");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("fp7"), std::string::npos) << r.out;
}

TEST_F(Cli, PrecisionCheckReportsMismatchMetrics) {
  const std::string data = write("pc.jsonl", "{\"tokens\":[256,72,105,33,10,72,105,33,10,1,2,3]}\n");
  CliRun same = run("precision check --model " + model_ + " --data " + data +
                    " --rollout-precision fp32 --train-precision fp32 -o json", false);
  ASSERT_EQ(same.code, 0) << same.out;
  auto j = nlohmann::json::parse(same.out);
  for (const char* k : {"logprob_abs_diff_mean", "logprob_abs_diff_max", "prob_abs_diff_mean", "prob_abs_diff_max",
                        "mismatch_k3_kl", "prob_pearson", "token_mult_prob_error"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["tokens"], 11);
  EXPECT_LT(j["logprob_abs_diff_max"].get<double>(), 1e-4);  // decode vs prefill, both fp32
  CliRun bf16 = run("precision check --model " + model_ + " --data " + data +
                    " --rollout-precision bf16 --train-precision fp32 -o json", false);
  ASSERT_EQ(bf16.code, 0) << bf16.out;
  EXPECT_GT(nlohmann::json::parse(bf16.out)["logprob_abs_diff_max"].get<double>(), 1e-4);
  CliRun parts = run("precision check --model " + model_ + " --data " + data +
                     " --rollout-precision bf16 --train-precision fp32 --breakdown -o json", false);
  ASSERT_EQ(parts.code, 0) << parts.out;
  auto b = nlohmann::json::parse(parts.out)["breakdown"];
  for (const char* k : {"weights", "activations", "kv", "head"}) {
    ASSERT_TRUE(b.contains(k)) << k;
    EXPECT_GT(b[k]["logprob_abs_diff_mean"].get<double>(), 0.0) << k;
  }
  EXPECT_FALSE(b.contains("state"));  // bf16 keeps an fp32 state: nothing to break down
  CliRun strict = run("precision check --model " + model_ + " --data " + data +
                      " --rollout-precision strict --train-precision strict -o json", false);
  ASSERT_EQ(strict.code, 0) << strict.out;
  EXPECT_EQ(nlohmann::json::parse(strict.out)["logprob_abs_diff_max"].get<double>(), 0.0);
  CliRun bad = run("precision check --model " + model_ + " --data " + data + " --rollout-precision bf17");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("--rollout-precision"), std::string::npos) << bad.out;
}

TEST_F(Cli, GenerateIsReproducibleBySeed) {
  CliRun a = run("model generate --model " + model_ + " --prompt 'Hi' --max-new-tokens 12 --seed 7", false);
  CliRun b = run("model generate --model " + model_ + " --prompt 'Hi' --max-new-tokens 12 --seed 7", false);
  CliRun c = run("model generate --model " + model_ + " --prompt 'Hi' --max-new-tokens 12 --seed 8");
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_NE(c.out.find("generated"), std::string::npos);
  EXPECT_EQ(a.out.rfind("Hi", 0), 0u);  // the prompt, then the continuation
  EXPECT_EQ(a.out, b.out);
  CliRun g = run("model generate --model " + model_ + " --prompt 'Hi' --max-new-tokens 5 --temperature 0");
  EXPECT_EQ(g.code, 0);
}

// Reads every tensor of a model directory as f32.
std::map<std::string, std::vector<float>> read_weights(const std::string& dir) {
  auto ckpt = interlace::model::Checkpoint::open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  std::map<std::string, std::vector<float>> out;
  for (const std::string& name : ckpt->names()) {
    auto t = ckpt->get(name);
    auto f = t->to_f32();
    out[name].assign(f.f32(), f.f32() + f.numel());
  }
  return out;
}

std::string sft_lines() {
  std::string text;
  for (int i = 0; i < 5; ++i) {
    nlohmann::json tokens = nlohmann::json::array(), mask = nlohmann::json::array();
    for (int t = 0; t < 10 + 3 * i; ++t) {
      tokens.push_back((t * 37 + i * 11) % 256);
      mask.push_back(t % 3 == 0 ? 0 : 1);
    }
    text += nlohmann::json{{"tokens", tokens}, {"loss_mask", mask}}.dump() + "\n";
  }
  return text;
}

// tokenize --chat on one of our models: Interlace's template (as Jinja) gives
// the same ids as ChatTemplate's token-by-token rendering; bad input is refused.
TEST_F(Cli, TokenizeChatRendersTheConversationAsTheAgentLoopDoes) {
  const std::string chat = write("chat.json", R"({"messages": [
    {"role": "system", "content": "Use tools."}, {"role": "user", "content": "2+3? <tool_call>"},
    {"role": "assistant", "reasoning_content": "calc it", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": {"expression": "2+3", "a": 1}}}]},
    {"role": "tool", "content": "5"}, {"role": "assistant", "content": "Answer: 5"}], "add_generation_prompt": true})");
  const CliRun r = run("tokenize --model " + model_ + " --chat " + chat + " -o json", /*with_stderr=*/false);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json got = nlohmann::json::parse(r.out);
  EXPECT_EQ(got["template"], "interlace");
  EXPECT_TRUE(got["rewrites_history_at_message"].is_null());
  using interlace::model::Message;
  using interlace::model::Role;
  const std::vector<Message> messages = {
      {Role::kSystem, "Use tools.", "", {}},
      {Role::kUser, "2+3? <tool_call>", "", {}},
      {Role::kAssistant, "", "calc it", {{"calc", {{"expression", "2+3"}, {"a", 1}}}}},
      {Role::kTool, "5", "", {}},
      {Role::kAssistant, "Answer: 5", "", {}}};
  const interlace::model::ByteTokenizer bytes;
  auto tmpl = interlace::model::ChatTemplate::create(bytes);
  ASSERT_TRUE(tmpl.ok());
  std::vector<int32_t> want = tmpl->render(messages, true);
  // The user's literal "<tool_call>" is a special token once the text is
  // re-tokenized: the one place where text rendering and the agent loop differ.
  std::vector<int32_t> user_text = bytes.encode("<tool_call>");
  auto at = std::search(want.begin(), want.end(), user_text.begin(), user_text.end());
  ASSERT_NE(at, want.end());
  at = want.erase(at, at + long(user_text.size()));
  want.insert(at, *bytes.special_id("<tool_call>"));
  EXPECT_EQ(got["ids"].get<std::vector<int32_t>>(), want);

  const CliRun both = run("tokenize --model " + model_ + " --chat " + chat + " --text x");
  EXPECT_EQ(both.code, 2) << both.out;
  const CliRun bad = run("tokenize --model " + model_ + " --chat " + write("bad.json", "{\"messages\": 3}"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("a conversation is a list of messages"), std::string::npos) << bad.out;
}

TEST_F(Cli, TrainSftOneSgdStepIsExactlyWeightMinusLrTimesGradOfTheWholeFile) {
  const std::string data = write("sft.jsonl", sft_lines());
  const std::string out = (dir_ / "sgd-out").string();
  CliRun r = run("train sft --model " + model_ + " --data " + data + " --out " + out +
                 " --optimizer sgd --weight-decay 0 --max-grad-norm 0 --steps 1 --lr 0.5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step 1/1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tok/s"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(fs::path(out) / "config.json"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "interlace_tokenizer.json"));

  auto tm = interlace::learner::load_training_model(model_);
  ASSERT_TRUE(tm.ok()) << tm.status();
  auto examples = interlace::learner::read_sft_file(data, (*tm)->config().vocab_size);
  ASSERT_TRUE(examples.ok());
  std::vector<const interlace::learner::SftExample*> batch;
  for (const auto& ex : *examples) batch.push_back(&ex);
  interlace::model::NamedTensors grads = (*tm)->zero_grads();
  interlace::learner::sft_accumulate(**tm, batch, grads);
  const auto written = read_weights(out);
  size_t changed = 0;
  for (const auto& [name, w] : (*tm)->weights()) {
    const std::vector<float>& got = written.at(name);
    const float* g = grads.at(name).f32();
    for (int64_t i = 0; i < w.numel(); ++i) {
      ASSERT_EQ(got[i], w.f32()[i] - 0.5f * g[i]) << name << "[" << i << "]";
      changed += got[i] != w.f32()[i];
    }
  }
  EXPECT_GT(changed, 1000u);
}

TEST_F(Cli, TrainSftResumesFromACheckpointToTheSameWeights) {
  const std::string data = write("resume.jsonl", sft_lines());
  const std::string a = (dir_ / "straight").string(), b = (dir_ / "resumed").string();
  const std::string common = " --model " + model_ + " --data " + data + " --steps 4 --batch-size 2 --seed 5";
  ASSERT_EQ(run("train sft" + common + " --out " + a + " --checkpoint-every 2").code, 0);
  CliRun r = run("train sft" + common + " --out " + b + " --resume " + a + "/checkpoints/step-2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from"), std::string::npos) << r.out;
  EXPECT_EQ(read_weights(a), read_weights(b));
  EXPECT_NE(read_weights(a), read_weights(model_));
}

TEST_F(Cli, TrainSftRejectsBadDataNamingTheLine) {
  const std::string out = (dir_ / "never").string();
  const std::string ok = "{\"tokens\":[1,2,3],\"loss_mask\":[0,1,1]}\n";
  struct Case {
    std::string name, text, expect;
  } cases[] = {
      {"oov.jsonl", ok + "{\"tokens\":[1,9999,3],\"loss_mask\":[0,1,1]}\n", "oov.jsonl:2: tokens[1] = 9999"},
      {"mask.jsonl", ok + ok + "{\"tokens\":[1,2,3],\"loss_mask\":[0,1]}\n", "mask.jsonl:3: loss_mask has 2"},
      {"empty.jsonl", "", "empty.jsonl: empty"},
  };
  for (const Case& c : cases) {
    CliRun r = run("train sft --model " + model_ + " --data " + write(c.name, c.text) + " --out " + out);
    EXPECT_EQ(r.code, 1) << c.name;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << r.out;
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(run("train sft --model " + model_ + " --data x --out y --optimizer adam").code, 1);
  EXPECT_EQ(run("train sft --model " + model_ + " --out y").code, 2);  // --data missing
}

TEST_F(Cli, EnvDemoFeedsTrainSftAndRolloutWritesTrajectories) {
  const std::string demos = (dir_ / "demos.jsonl").string();
  CliRun d = run("env demo --env guess-number:max=20 --n 6 --out " + demos);
  ASSERT_EQ(d.code, 0) << d.out;
  std::ifstream in(demos);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["tokens"].size(), j["loss_mask"].size());
    ++lines;
  }
  EXPECT_EQ(lines, 6);
  CliRun t = run("train sft --model " + model_ + " --data " + demos + " --out " + (dir_ / "demo-sft").string() +
                 " --steps 1 --quiet");
  EXPECT_EQ(t.code, 0) << t.out;

  const std::string traj = (dir_ / "traj.jsonl").string();
  CliRun r = run("rollout --model " + model_ + " --env calculator --prompts 3 --group-size 2 --max-turns 2 "
                 "--max-new-tokens 12 --seed 4 --out " + traj);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("episodes/s"), std::string::npos) << r.out;
  std::ifstream tin(traj);
  int n = 0;
  while (std::getline(tin, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"tokens", "logprobs", "loss_mask", "turns", "reward", "policy_versions", "finish_reason",
                          "cached_tokens"})
      EXPECT_TRUE(j.contains(k)) << k;
    const auto& tokens = j["tokens"];
    ASSERT_EQ(j["logprobs"].size(), tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i)
      EXPECT_EQ(j["loss_mask"][i] == 1, !j["logprobs"][i].is_null()) << i;
    EXPECT_EQ(j["group"], n / 2);
    ++n;
  }
  EXPECT_EQ(n, 6);
  CliRun bad = run("rollout --model " + model_ + " --env chess --out " + traj);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("calculator"), std::string::npos) << bad.out;
}

// --speculate changes how fast, never what: the trajectories (tokens,
// log-probs, versions, rewards) are the same line for line under the strict
// profile, with prompt lookup and with a draft model (a different model).
TEST_F(Cli, RolloutWithSpeculationWritesTheSameTrajectories) {
  const std::string plain = (dir_ / "plain.jsonl").string(), ngram = (dir_ / "ngram.jsonl").string(),
                    drafted = (dir_ / "drafted.jsonl").string(), draft = (dir_ / "draft").string();
  ASSERT_EQ(run("model init --config " + std::string(INTERLACE_SOURCE_DIR) + "/examples/models/tiny-full.json --out " +
                draft + " --seed 8").code, 0);
  // One OpenMP thread: tiny models, many small forwards (see speculative_test in tests/CMakeLists.txt).
  ::setenv("OMP_NUM_THREADS", "1", 1);
  const std::string common = "rollout --model " + model_ + " --env kv-retrieval --prompts 4 --group-size 2 "
                             "--max-turns 2 --max-new-tokens 24 --temperature 0.7 --seed 2 --precision strict --out ";
  CliRun a = run(common + plain);
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(a.out.find("speculation:"), std::string::npos);
  CliRun b = run(common + ngram + " --speculate ngram:k=4");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("speculation: ngram:k=4"), std::string::npos) << b.out;
  CliRun c = run(common + drafted + " --speculate model:" + draft + ",k=3");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("accepted"), std::string::npos) << c.out;
  auto lines = [](const std::string& path) {
    std::vector<std::string> out;
    std::ifstream in(path);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  };
  const auto want = lines(plain);
  ASSERT_EQ(want.size(), 8u);
  EXPECT_EQ(lines(ngram), want);
  EXPECT_EQ(lines(drafted), want);
  // A bad spec, and a draft model with another vocabulary, are refused with the reason.
  CliRun bad = run(common + ngram + " --speculate eagle:k=2");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("ngram[:k=N"), std::string::npos) << bad.out;
  CliRun missing = run(common + ngram + " --speculate model:/nonexistent");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("draft model"), std::string::npos) << missing.out;
}

TEST_F(Cli, BenchSpeculativeReportsAcceptanceAndSpeedSideBySide) {
  ::setenv("OMP_NUM_THREADS", "1", 1);  // as in RolloutWithSpeculationWritesTheSameTrajectories
  const CliRun r = run("bench speculative --models tiny-hybrid-3to1.json --workloads random kv-retrieval "
                       "--temperatures 0 --batch-sizes 1 4 --episodes 4 --max-turns 2 --max-new-tokens 16 -o json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["results"].size(), 4u) << "2 workloads x 2 batch sizes";
  for (const auto& row : doc["results"]) {
    const auto &on = row["on"], &off = row["off"];
    EXPECT_EQ(off["verifications"], 0);
    EXPECT_EQ(on["generated_tokens"], off["generated_tokens"]);
    EXPECT_GE(on["drafted"].get<int64_t>(), on["accepted"].get<int64_t>());
    EXPECT_LE(on["steps"].get<int64_t>(), off["steps"].get<int64_t>());
    EXPECT_GE(on["rollback_fraction"].get<double>(), 0.0);
    EXPECT_LT(on["rollback_fraction"].get<double>(), 1.0);
  }
}

}  // namespace

// `interlace run --warmup-only`: the SFT warm-up and the evaluation of the
// starting model, no services; a warm-up below the level the job expects is
// said plainly, in the output and in the summary.
TEST_F(Cli, RunWarmupOnlyEvaluatesTheStartingModelAndSaysWhenItFallsShort) {
  const std::string job = write("warmup.yaml", std::string(R"(name: warmup-check
env: "calculator:max_number=5,short_prompt=1"
model: {init: )") + INTERLACE_SOURCE_DIR + R"(/examples/models/tiny-hybrid.json}
sft: {demos: 16, steps: 2, batch_size: 2, expect_greedy_reward: 0.9}
algorithm: {steps: 1}
rollout: {max_turns: 1, max_turn_tokens: 8}
eval: {prompts: 4, samples: 0}
)");
  const std::string run_dir = (dir_ / "warmup-run").string();
  const CliRun r = run("run " + job + " --run-dir " + run_dir + " --warmup-only --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("held-out reward (4 greedy episodes): 0.000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("warning: the SFT model solves 0% of 4 held-out tasks greedily, below the 90% this job expects"),
            std::string::npos)
      << r.out;
  std::ifstream in(fs::path(run_dir) / "warmup-summary.json");
  const nlohmann::json s = nlohmann::json::parse(in);
  EXPECT_EQ(s["warnings"].size(), 1u) << s.dump(2);
  EXPECT_EQ(s["eval_episodes_before"], 4);
  EXPECT_TRUE(fs::exists(fs::path(run_dir) / "sft-model" / "config.json"));
  EXPECT_FALSE(fs::exists(fs::path(run_dir) / "endpoints.json")) << "no services were started";
  EXPECT_FALSE(fs::exists(fs::path(run_dir) / "final-model"));

  // -o json: stdout is one JSON document, although the children (demos, SFT,
  // evaluation) print progress lines of their own.
  const CliRun j = run("run " + job + " --run-dir " + (dir_ / "warmup-json").string() + " --warmup-only --quiet -o json",
                       /*with_stderr=*/false);
  ASSERT_EQ(j.code, 0) << j.out;
  const nlohmann::json doc = nlohmann::json::parse(j.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << "stdout is not one JSON document:\n" << j.out;
  EXPECT_EQ(doc["eval_episodes_before"], 4);

  // A checked warm-up trains in pieces of check_every steps and plays the
  // validation tasks after each; this model never reaches the level, so it
  // takes every step (2, 4, then the last 1) and says so.
  std::string checked_spec((std::istreambuf_iterator<char>(std::ifstream(job).rdbuf())), {});
  const std::string from = "sft: {demos: 16, steps: 2,";
  checked_spec.replace(checked_spec.find(from), from.size(), "sft: {demos: 16, steps: 5, check_every: 2,");
  const std::string checked_job = write("checked.yaml", checked_spec);
  const std::string checked_dir = (dir_ / "checked-run").string();
  const CliRun c = run("run " + checked_job + " --run-dir " + checked_dir + " --warmup-only --quiet");
  ASSERT_EQ(c.code, 0) << c.out;
  const nlohmann::json cs = nlohmann::json::parse(std::ifstream(fs::path(checked_dir) / "warmup-summary.json"));
  ASSERT_EQ(cs["sft_checks"].size(), 3u) << cs.dump(2);
  EXPECT_EQ(cs["sft_checks"][0]["step"], 2);
  EXPECT_EQ(cs["sft_checks"][1]["step"], 4);
  EXPECT_EQ(cs["sft_checks"][2]["step"], 5);
  EXPECT_EQ(cs["sft_checks"][2]["validation_greedy_reward"], 0.0);
  EXPECT_EQ(cs["sft_steps_taken"], 5);
  EXPECT_TRUE(fs::exists(fs::path(checked_dir) / "sft-model" / "config.json"));
  EXPECT_FALSE(fs::exists(fs::path(checked_dir) / "sft-work")) << "the pieces' work directory was left behind";
  EXPECT_FALSE(fs::exists(fs::path(checked_dir) / "sft-model" / "checkpoints")) << "checkpoints were left in the model";
  // `interlace report` reads what the run left (here: a warm-up only).
  const CliRun rep = run("report " + checked_dir + " --out " + (dir_ / "checked-report.html").string());
  ASSERT_EQ(rep.code, 0) << rep.out;
  std::string page((std::istreambuf_iterator<char>(std::ifstream(dir_ / "checked-report.html").rdbuf())), {});
  EXPECT_NE(page.find("No held-out change to report (a warm-up-only run)"), std::string::npos) << page.substr(0, 2000);
  EXPECT_NE(page.find("<title>SFT warm-up: "), std::string::npos) << "no time by phase";
  EXPECT_EQ(run("report " + (dir_ / "no-such-run").string()).code, 2);
  // check_every needs a level to stop at.
  checked_spec.replace(checked_spec.find("expect_greedy_reward: 0.9"), 25, "expect_greedy_reward: 0");
  const CliRun bad = run("run " + write("checked-bad.yaml", checked_spec) + " --warmup-only --quiet");
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("sft.check_every"), std::string::npos) << bad.out;
}

// `interlace bench cache`: on a small multi-turn workload the cache never
// prefills fewer tokens than the lower bound (no cache could), and never more
// than running without it; the figures it reports add up.
TEST_F(Cli, BenchCachePrefillsBetweenTheLowerBoundAndNoCache) {
  const CliRun r = run("bench cache --prompts 3 --group-size 3 --max-turns 3 --max-new-tokens 12 -o json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["results"].size(), 4u) << "2 models x 2 environments";
  for (const auto& row : doc["results"]) {
    const auto& on = row["with_cache"];
    const auto& off = row["without_cache"];
    SCOPED_TRACE(row["model"].get<std::string>() + " on " + row["env"].get<std::string>());
    EXPECT_EQ(on["episodes"], 9);
    EXPECT_GE(on["prefilled_tokens"].get<int64_t>(), on["lower_bound_tokens"].get<int64_t>());
    EXPECT_GT(on["lower_bound_tokens"].get<int64_t>(), 0);
    EXPECT_LE(on["prefilled_tokens"].get<int64_t>(), off["prefilled_tokens"].get<int64_t>());
    EXPECT_EQ(off["prefilled_tokens"], off["prompt_tokens"]);
    EXPECT_LE(on["cache_bytes_held"].get<int64_t>(), on["cache_budget_bytes"].get<int64_t>());
    EXPECT_NEAR(on["over_lower_bound"].get<double>(),
                double(on["prefilled_tokens"].get<int64_t>()) / double(on["lower_bound_tokens"].get<int64_t>()), 1e-9);
  }
}

namespace interlace {
namespace {

using nlohmann::json;

// examples/study/tiny.yaml end to end: two variants through `interlace run`'s
// path, one row each in table.json with the figures the README's study
// quotes, SFT steps matched on training FLOPs (model/flops.h), a report that
// overlays both runs; a second call resumes instead of running again.
TEST(Study, TheTinyStudyRunsBothVariantsMatchedOnFlops) {
  const fs::path dir = fs::temp_directory_path() / ("interlace_study_" + std::to_string(::getpid()));
  const std::string spec = std::string(INTERLACE_SOURCE_DIR) + "/examples/study/tiny.yaml";
  const CliRun first = run("study " + spec + " --run-dir " + dir.string() + " --quiet -o json", /*with_stderr=*/false);
  ASSERT_EQ(first.code, 0) << first.out;
  const json table = json::parse(first.out, nullptr, false);
  ASSERT_TRUE(table.is_object()) << first.out;
  EXPECT_EQ(table, json::parse(std::ifstream(dir / "table.json"))) << "stdout and table.json differ";
  ASSERT_EQ(table["rows"].size(), 2u);
  const json& full = table["rows"][0];
  const json& hybrid = table["rows"][1];
  EXPECT_EQ(full["variant"], "full");
  EXPECT_EQ(hybrid["variant"], "hybrid-3to1");
  EXPECT_EQ(full["sft_steps"], 30) << "the reference keeps the base steps";
  const double ratio = full["training_flops_per_token"].get<double>() / hybrid["training_flops_per_token"].get<double>();
  EXPECT_EQ(hybrid["sft_steps"].get<int64_t>(), std::llround(30 * ratio));
  EXPECT_NEAR(full["sft_flops_per_sequence_token"].get<double>(), hybrid["sft_flops_per_sequence_token"].get<double>(),
              0.03 * full["sft_flops_per_sequence_token"].get<double>())
      << "the budgets differ by more than a step's rounding";
  for (const json& row : table["rows"]) {
    for (const char* k : {"eval_reward_before", "eval_reward_after", "eval_sampled_reward_after", "total_seconds"})
      EXPECT_TRUE(row[k].is_number()) << k << " in " << row.dump();
    EXPECT_TRUE(fs::exists(fs::path(row["run_dir"].get<std::string>()) / "summary.json"));
    const json& unseen = row["eval_envs_greedy_reward"]["calculator:max_number=9,short_prompt=1"];
    EXPECT_TRUE(unseen.is_number() && unseen.get<double>() >= 0 && unseen.get<double>() <= 1) << row.dump();
  }
  // The summary per variant: each episode set, the hybrid paired with full,
  // state drift measured only where there are lightning layers.
  const json& summary = table["summary"];
  ASSERT_EQ(summary["variants"].size(), 2u) << summary.dump();
  EXPECT_EQ(summary["sets"], json({"held-out greedy", "held-out sampled", "calculator:max_number=9,short_prompt=1"}));
  const json& hybrid_summary = summary["variants"][1];
  const json paired = hybrid_summary.value("vs_reference", json::object()).value("held-out greedy", json::object());
  EXPECT_EQ(paired.value("episodes", 0), 4) << "4 held-out tasks, paired: " << hybrid_summary.dump();
  EXPECT_FALSE(summary["variants"][0].value("figures", json::object()).contains("state_drift_bf16"));
  const json figures = hybrid_summary.value("figures", json::object());
  const double bf16 = figures.value("state_drift_bf16", -1.0), fp16 = figures.value("state_drift_fp16", -1.0);
  EXPECT_GT(fp16, 0) << hybrid_summary.dump();
  EXPECT_GT(bf16, fp16) << "bf16 keeps 8 mantissa bits, fp16 11";
  for (const char* k : {"sft_tokens_per_second", "rollout_tokens_per_second", "cache_hit_rate", "state_bytes_per_sequence"})
    EXPECT_GT(figures.value(k, 0.0), 0) << k;
  // Memory per sequence: per token, the 3:1 hybrid's 2 softmax layers hold
  // half of what the full model's 4 do; its lightning states do not grow.
  const json bytes = table.value("state_bytes", json::object());
  auto growth = [&](const char* v) {
    const json points = bytes.value(v, json::array());
    return points.size() < 2 ? 0.0 : points.back()[1].get<double>() - points[points.size() - 2][1].get<double>();
  };
  EXPECT_GT(growth("full"), 0) << bytes.dump();
  EXPECT_DOUBLE_EQ(growth("hybrid-3to1"), 0.5 * growth("full"));
  std::ifstream report(dir / "report.html");
  const std::string html((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  EXPECT_NE(html.find("What it cannot show"), std::string::npos);
  EXPECT_NE(html.find("Memory per sequence"), std::string::npos);
  EXPECT_NE(html.find("full-seed0/report.html"), std::string::npos) << "each run's own report is linked";
  std::ifstream runs_report(dir / "runs-report.html");
  const std::string runs_html((std::istreambuf_iterator<char>(runs_report)), std::istreambuf_iterator<char>());
  EXPECT_NE(runs_html.find("hybrid-3to1-seed0"), std::string::npos) << "the runs overlaid";
  // Again: both runs are kept, not rerun.
  const CliRun again = run("study " + spec + " --run-dir " + dir.string());
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("full-seed0: done before, kept"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("hybrid-3to1"), std::string::npos) << again.out;
  // The shipped comparison parses and plans: 4 variants x 2 tasks x 3 seeds,
  // the sliding-window model's FLOPs below the full model's at 512 tokens.
  const CliRun plan = run("study " + std::string(INTERLACE_SOURCE_DIR) + "/examples/study/architectures.yaml --plan -o json",
                          /*with_stderr=*/false);
  ASSERT_EQ(plan.code, 0) << plan.out;
  const json planned = json::parse(plan.out, nullptr, false);
  ASSERT_EQ(planned["rows"].size(), 24u) << plan.out;
  std::map<std::string, double> flops;
  for (const json& row : planned["rows"]) flops[row["variant"]] = row["training_flops_per_token"];
  EXPECT_LT(flops["sliding-window"], flops["full"]);
  EXPECT_FALSE(fs::exists(fs::path("runs/study-architectures"))) << "--plan wrote something";
  // A bad spec says what is wrong.
  std::ofstream(dir / "bad.yaml") << "job: ../x.yaml\nmatch: tokens\nvariants: []\n";
  const CliRun bad = run("study " + (dir / "bad.yaml").string());
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("match: 'tokens' is not allowed"), std::string::npos) << bad.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace interlace
