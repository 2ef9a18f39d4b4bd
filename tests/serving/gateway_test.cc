// The serving path end to end: real `interlace serve worker --serve` and
// `interlace serve gateway` processes (ZeroMQ + CURVE between them), spoken
// to over HTTP as an OpenAI client would.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "interlace/control/redis_client.h"
#include "interlace/control/worker_registry.h"
#include "support/redis_server.h"
#include "support/child_process.h"
#include "support/temp_dir.h"

namespace interlace::serving {
namespace {

using test::start_group;

using nlohmann::json;
constexpr const char* kToken = "gateway-test-token";


std::string wait_for_file(const std::string& path) {
  for (int i = 0; i < 600; ++i) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) return line;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "";
}

// Server-sent events: the JSON of each "data:" line, and whether [DONE] came.
struct Sse {
  std::vector<json> events;
  bool done = false;
};
Sse parse_sse(const std::string& body) {
  Sse out;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    const std::string data = body.substr(at + 6, end == std::string::npos ? std::string::npos : end - at - 6);
    if (data == "[DONE]") out.done = true;
    else out.events.push_back(json::parse(data, nullptr, false));
    if (end == std::string::npos) break;
    at = end + 2;
  }
  return out;
}

class Gateway : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>();
    model_ = dir_->path() + "/tiny";
    ASSERT_EQ(std::system((std::string(INTERLACE_BIN) + " model init --config " + INTERLACE_SOURCE_DIR +
                           "/examples/models/tiny-hybrid.json --out " + model_ + " --seed 3 >/dev/null 2>&1")
                              .c_str()),
              0);
    keys_ = dir_->path() + "/keys";
    worker_ = worker("w0");
    port_ = gateway("main", {worker_endpoint("w0")}, {"--max-model-len", "512"});
    ASSERT_GT(port_, 0);
  }
  static void TearDownTestSuite() {
    for (pid_t p : pids_) test::kill_group(p, SIGKILL);
    dir_.reset();
  }

  static pid_t worker(const std::string& name, const std::vector<std::string>& extra = {}) {
    // One thread each: several workers share this machine's cores.
    std::vector<std::string> args = {INTERLACE_BIN, "serve", "worker", "--serve", model_, "--keys", keys_, "--endpoint-file",
                                     dir_->path() + "/" + name + ".endpoint", "--threads", "1", "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    pids_.push_back(start_group(args));
    wait_for_file(dir_->path() + "/" + name + ".endpoint");
    return pids_.back();
  }
  static std::string worker_endpoint(const std::string& name) { return wait_for_file(dir_->path() + "/" + name + ".endpoint"); }
  static int gateway(const std::string& name, const std::vector<std::string>& workers, std::vector<std::string> extra = {},
                     bool wait_ready = true) {
    std::vector<std::string> args = {INTERLACE_BIN, "serve", "gateway", "--model", model_, "--keys", keys_, "--listen", "127.0.0.1:0",
                                     "--port-file", dir_->path() + "/" + name + ".port", "--token-file", token_file(), "--quiet"};
    for (const auto& w : workers) args.insert(args.end(), {"--worker", w});
    args.insert(args.end(), extra.begin(), extra.end());
    pids_.push_back(start_group(args));
    const int port = std::atoi(wait_for_file(dir_->path() + "/" + name + ".port").c_str());
    // Ready once a worker's CURVE handshake is done (or never, for a gateway without live workers).
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 250 && wait_ready; ++i) {
      auto r = c.Get("/readyz");
      if (r && r->status == 200) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return port;
  }
  static std::string token_file() {
    const std::string path = dir_->path() + "/token";
    std::ofstream(path) << kToken << "\n";
    return path;
  }

  static httplib::Result post(int port, const std::string& path, const std::string& body, const char* token = kToken) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60);
    httplib::Headers h;
    if (token) h.emplace("Authorization", std::string("Bearer ") + token);
    return c.Post(path.c_str(), h, body, "application/json");
  }
  static json post_json(const std::string& path, const json& body, int expect_status = 200) {
    auto r = post(port_, path, body.dump());
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, expect_status) << path << " " << r->body;
    return json::parse(r->body, nullptr, false);
  }
  // A streamed request, read until it ends (or until STOP_AFTER bytes, then the client hangs up).
  static std::string post_stream(int port, const json& body, size_t stop_after = 0) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.headers = {{"Authorization", std::string("Bearer ") + kToken}, {"Content-Type", "application/json"}};
    req.body = body.dump();
    std::string got;
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      got.append(data, n);
      return stop_after == 0 || got.size() < stop_after;
    };
    c.send(req);
    return got;
  }
  static double metric(int port, const std::string& series) {
    httplib::Client c("127.0.0.1", port);
    auto r = c.Get("/metrics");
    if (!r) return -1;
    size_t at = r->body.find("\n" + series + " ");
    if (at == std::string::npos) return 0;
    return std::stod(r->body.substr(at + series.size() + 2));
  }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline std::string model_, keys_;
  static inline std::vector<pid_t> pids_;
  static inline pid_t worker_ = 0;
  static inline int port_ = 0;
};

const json kQuestion = {{"role", "user"}, {"content", "What is 2+3?"}};

TEST_F(Gateway, ChatAnswersWholeAndStreamedAlikeAndASecondTurnHitsTheCache) {
  httplib::Client c("127.0.0.1", port_);
  auto models = c.Get("/v1/models", {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");

  const json request = {{"model", "tiny"}, {"messages", {kQuestion}}, {"max_tokens", 24}, {"temperature", 0}, {"seed", 1}};
  const json whole = post_json("/v1/chat/completions", request);
  ASSERT_EQ(whole["object"], "chat.completion") << whole.dump();
  const json& message = whole["choices"][0]["message"];
  EXPECT_EQ(message["role"], "assistant");
  const int64_t prompt_tokens = whole["usage"]["prompt_tokens"];
  EXPECT_GT(prompt_tokens, 10);
  EXPECT_EQ(whole["usage"]["total_tokens"], prompt_tokens + whole["usage"]["completion_tokens"].get<int64_t>());

  // The same request streamed (greedy): the deltas add up to the same message.
  json streamed_request = request;
  streamed_request["stream"] = true;
  streamed_request["stream_options"] = {{"include_usage", true}};
  const Sse sse = parse_sse(post_stream(port_, streamed_request));
  ASSERT_TRUE(sse.done) << "no [DONE]";
  std::string content, reasoning, finish;
  for (const json& e : sse.events) {
    ASSERT_FALSE(e.is_discarded());
    if (e.contains("usage")) {
      EXPECT_EQ(e["usage"]["prompt_tokens"], prompt_tokens);
      // The same prompt again: the worker's cache held it.
      EXPECT_GE(e["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), prompt_tokens - 16) << e.dump();
      continue;
    }
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    const json& d = e["choices"][0]["delta"];
    if (d.contains("content")) content += d["content"].get<std::string>();
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, message.value("content", ""));
  EXPECT_EQ(reasoning, message.value("reasoning_content", ""));
  EXPECT_EQ(finish, whole["choices"][0]["finish_reason"]);

  // Turn two sends the answer back: its prompt starts with turn one's, which
  // the worker still holds.
  json turn2 = request;
  turn2["messages"] = {kQuestion, message, {{"role", "user"}, {"content", "And 4+4?"}}};
  const json second = post_json("/v1/chat/completions", turn2);
  EXPECT_GE(second["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), prompt_tokens - 16) << second.dump();

  // n > 1 samples: as many choices, each with its index.
  json many = request;
  many["n"] = 3;
  many["temperature"] = 1.0;
  const json three = post_json("/v1/chat/completions", many);
  ASSERT_EQ(three["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(three["choices"][i]["index"], i);
}

TEST_F(Gateway, CompletionsStopStringsAndTokenLevelGenerate) {
  // Token ids in and out, with the model's log-probs (<= 0) and weights versions.
  const json g = post_json("/generate", {{"input_ids", {10, 20, 30, 40}}, {"sampling_params", {{"max_new_tokens", 8}, {"temperature", 0}}}});
  ASSERT_EQ(g["output_ids"].size(), 8u) << g.dump();
  ASSERT_EQ(g["logprobs"].size(), 8u);
  for (const json& lp : g["logprobs"]) EXPECT_LE(lp.get<double>(), 0.0);
  for (const json& v : g["versions"]) EXPECT_EQ(v, 0);
  EXPECT_EQ(g["finish_reason"], "length");
  const json again = post_json("/generate", {{"input_ids", {10, 20, 30, 40}}, {"sampling_params", {{"max_new_tokens", 8}, {"temperature", 0}}}});
  EXPECT_EQ(again["output_ids"], g["output_ids"]) << "greedy is deterministic";

  // A stop string ends the text at its match (the random model's bytes: stop on the first letter it writes).
  const json plain = post_json("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 40}, {"temperature", 0}, {"ignore_eos", true}});
  const std::string text = plain["choices"][0]["text"];
  ASSERT_FALSE(text.empty());
  // A printable ASCII character the text has after its first (the random model writes bytes).
  size_t pick = std::string::npos;
  for (size_t i = 1; i < text.size() && pick == std::string::npos; ++i)
    if (text[i] > ' ' && text[i] < 0x7f && text.find(text[i]) == i) pick = i;
  if (pick == std::string::npos) GTEST_SKIP() << "the model wrote no ASCII to stop on: " << text;
  const std::string stop = text.substr(pick, 1);
  const json stopped =
      post_json("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 40}, {"temperature", 0}, {"ignore_eos", true}, {"stop", stop}});
  const std::string cut = stopped["choices"][0]["text"];
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop") << stopped.dump();
  EXPECT_TRUE(cut.ends_with(stop)) << cut;
  EXPECT_EQ(cut, text.substr(0, text.find(stop) + 1));
}

// top_logprobs in each API's format: chat's list of {token, logprob, bytes}
// per token, the legacy completions' {piece: logprob} per token, /generate's
// ids and log-probs. Greedy: the first alternative is the token chosen, with
// its log-prob; the rest come in order; streamed chat gives the same.
TEST_F(Gateway, TopLogprobsComeBackInEachApisFormat) {
  const json request = {{"messages", {kQuestion}}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true},
                        {"logprobs", true}, {"top_logprobs", 3}};
  const json chat = post_json("/v1/chat/completions", request);
  const json& content = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 6u) << chat.dump();
  for (const json& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 3u) << t.dump();
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_EQ(t["top_logprobs"][0]["logprob"], t["logprob"]);
    EXPECT_EQ(t["top_logprobs"][0]["bytes"], t["bytes"]);
    for (size_t i = 1; i < 3; ++i) EXPECT_LE(t["top_logprobs"][i]["logprob"].get<double>(), t["top_logprobs"][i - 1]["logprob"].get<double>());
  }
  json streamed_request = request;
  streamed_request["stream"] = true;
  json streamed = json::array();
  for (const json& e : parse_sse(post_stream(port_, streamed_request)).events)
    if (e.contains("choices") && !e["choices"].empty() && e["choices"][0].contains("logprobs") && !e["choices"][0]["logprobs"].is_null())
      for (const json& t : e["choices"][0]["logprobs"]["content"]) streamed.push_back(t);
  EXPECT_EQ(streamed, content);

  const json legacy = post_json("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 5}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 2}});
  const json& lp = legacy["choices"][0]["logprobs"];
  ASSERT_EQ(lp["top_logprobs"].size(), 5u) << legacy.dump();
  for (size_t i = 0; i < 5; ++i) {
    const json& alternatives = lp["top_logprobs"][i];
    EXPECT_TRUE(alternatives.size() == 2 || alternatives.size() == 1) << alternatives.dump();  // two ids may decode alike
    ASSERT_TRUE(alternatives.contains(lp["tokens"][i].get<std::string>())) << alternatives.dump();
    EXPECT_EQ(alternatives[lp["tokens"][i].get<std::string>()], lp["token_logprobs"][i]) << legacy.dump();
  }

  const json g = post_json("/generate", {{"input_ids", {10, 20, 30}}, {"sampling_params", {{"max_new_tokens", 4}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 5}}}});
  ASSERT_EQ(g["top_ids"].size(), 4u) << g.dump();
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_EQ(g["top_ids"][i].size(), 5u);
    EXPECT_EQ(g["top_ids"][i][0], g["output_ids"][i]);
    EXPECT_EQ(g["top_logprobs"][i][0], g["logprobs"][i]);
  }
  const json plain = post_json("/generate", {{"input_ids", {10, 20, 30}}, {"sampling_params", {{"max_new_tokens", 4}, {"temperature", 0}}}});
  EXPECT_FALSE(plain.contains("top_ids")) << "alternatives only when asked for";
}

TEST_F(Gateway, BadRequestsGetOpenAIErrorObjectsWithTheirStatus) {
  auto expect = [](httplib::Result r, int status, const std::string& param_or_code) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status) << r->body;
    const json e = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << r->body;
    EXPECT_TRUE(e["error"]["message"].is_string());
    if (!param_or_code.empty()) {
      EXPECT_TRUE(e["error"]["param"] == param_or_code || e["error"]["code"] == param_or_code) << r->body;
    }
  };
  const std::string ok = json({{"messages", {kQuestion}}, {"max_tokens", 4}}).dump();
  expect(post(port_, "/v1/chat/completions", ok, nullptr), 401, "invalid_api_key");
  expect(post(port_, "/v1/chat/completions", ok, "wrong"), 401, "invalid_api_key");
  expect(post(port_, "/v1/chat/completions", "{not json"), 400, "");
  expect(post(port_, "/v1/chat/completions", R"({"messages": []})"), 400, "messages");
  expect(post(port_, "/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})"), 400, "messages[0].role");
  expect(post(port_, "/v1/chat/completions", json({{"model", "gpt-9"}, {"messages", {kQuestion}}}).dump()), 404, "model_not_found");
  expect(post(port_, "/v1/nothing", ok), 404, "not_found");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"max_tokens", 600}}).dump()), 413, "context_length_exceeded");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"temperature", 5}}).dump()), 422, "temperature");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"top_p", 0}}).dump()), 422, "top_p");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"n", 0}}).dump()), 422, "n");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"top_logprobs", 3}}).dump()), 422, "top_logprobs");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"logprobs", true}, {"top_logprobs", 21}}).dump()), 422,
         "top_logprobs");
  expect(post(port_, "/v1/completions", json({{"prompt", "abc"}, {"logprobs", "all"}}).dump()), 422, "logprobs");
  expect(post(port_, "/generate", R"({"input_ids": [1, 999999]})"), 422, "input_ids");
  expect(post(port_, "/v1/chat/completions", std::string(size_t{17} << 20, ' ')), 413, "");
  expect(post(port_, "/v1/chat/completions", json({{"messages", {kQuestion}}, {"stream", "yes"}}).dump()), 422, "stream");
  // Still serving after all that.
  post_json("/v1/chat/completions", {{"messages", {kQuestion}}, {"max_tokens", 2}});

  // Too many in flight: 429 with Retry-After while one long request holds the only slot.
  const int busy = gateway("busy", {worker_endpoint("w0")}, {"--max-in-flight", "1"});
  std::string hold_body;
  std::thread hold([busy, &hold_body] {
    auto r = post(busy, "/v1/completions", json({{"prompt", "x"}, {"max_tokens", 1500}, {"ignore_eos", true}}).dump());
    hold_body = r ? r->body.substr(0, 300) : "no answer";
  });
  for (int i = 0; i < 500 && metric(busy, "interlace_gateway_requests_in_flight") < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  auto limited = post(busy, "/v1/completions", json({{"prompt", "x"}, {"max_tokens", 1}}).dump());
  const int limited_status = limited ? limited->status : 0;
  const std::string retry_after = limited ? limited->get_header_value("Retry-After") : "";
  const std::string limited_body = limited ? limited->body : "";
  hold.join();
  EXPECT_EQ(limited_status, 429) << limited_body << "\nthe long request: " << hold_body;
  EXPECT_EQ(retry_after, "1");

  // No worker connected: not ready, and requests get 503.
  const int lonely = gateway("lonely", {"tcp://127.0.0.1:1"}, {}, /*wait_ready=*/false);
  httplib::Client c("127.0.0.1", lonely);
  auto ready = c.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  expect(post(lonely, "/v1/chat/completions", ok), 503, "");
}

TEST_F(Gateway, AClientThatHangsUpAbortsItsRequestAndALostWorkerEndsTheStream) {
  const json long_request = {{"messages", {kQuestion}}, {"max_tokens", 400}, {"stream", true}, {"ignore_eos", true}};
  const double aborts_before = metric(port_, "interlace_gateway_client_aborts_total");
  const std::string partial = post_stream(port_, long_request, /*stop_after=*/600);
  EXPECT_GE(partial.size(), 600u);
  for (int i = 0; i < 200 && metric(port_, "interlace_gateway_client_aborts_total") <= aborts_before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(metric(port_, "interlace_gateway_client_aborts_total"), aborts_before + 1);
  for (int i = 0; i < 200 && metric(port_, "interlace_gateway_requests_in_flight") > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(metric(port_, "interlace_gateway_requests_in_flight"), 0);

  // A worker killed mid-stream: the stream ends with an error event, not a hang.
  const pid_t doomed = worker("w-doomed");
  const int port = gateway("doomed", {worker_endpoint("w-doomed")});
  std::thread killer([doomed] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(-doomed, SIGKILL);
  });
  const auto t0 = std::chrono::steady_clock::now();
  const Sse sse = parse_sse(post_stream(port, {{"messages", {kQuestion}}, {"max_tokens", 4000}, {"stream", true}, {"ignore_eos", true}}));
  killer.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  ASSERT_FALSE(sse.events.empty());
  EXPECT_FALSE(sse.done);
  EXPECT_TRUE(sse.events.back().contains("error")) << sse.events.back().dump();
}

// --follow: a serving worker follows a training run (`interlace run`, a real
// learner and rollout worker) and serves each weights version the learner
// publishes: /generate's per-token versions reach the last step's. Polling
// while nothing is new costs no payload: the bytes fetched are about one
// payload per version, not one per poll (100 ms polls over the whole run).
TEST_F(Gateway, AFollowingWorkerServesEachVersionTheLearnerPublishes) {
  constexpr int kSteps = 4;
  const std::string run = dir_->path() + "/followed-run", job = dir_->path() + "/followed.yaml";
  std::ofstream(job) << "name: followed\n"
                        "env: calculator\n"
                        "model: {init: " INTERLACE_SOURCE_DIR "/examples/models/tiny-hybrid.json}\n"
                        "algorithm: {name: grpo, steps: " << kSteps << ", groups_per_step: 2, group_size: 2}\n"
                        "rollout: {workers: 1, max_turns: 1, max_turn_tokens: 8}\n"
                        "eval: {prompts: 0}\n";
  pids_.push_back(start_group({"/bin/sh", "-c", std::string("exec ") + INTERLACE_BIN + " run " + job + " --run-dir " + run +
                                                    " >" + dir_->path() + "/followed.log 2>&1"}));
  ASSERT_FALSE(wait_for_file(run + "/endpoints.json").empty()) << "the run did not start: " << dir_->path() << "/followed.log";
  const std::string initial = json::parse(std::ifstream(run + "/endpoints.json"))["initial_model"];
  const std::string metrics_file = dir_->path() + "/follower.metrics";
  worker("follower", {"--follow", run, "--follow-poll-ms", "100", "--metrics-listen", "127.0.0.1:0", "--metrics-port-file", metrics_file});
  const int port = gateway("following", {worker_endpoint("follower")});
  const int metrics_port = std::atoi(wait_for_file(metrics_file).c_str());
  ASSERT_GT(metrics_port, 0);
  for (int i = 0; i < 1500 && metric(metrics_port, "interlace_weights_version") < kSteps; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(metric(metrics_port, "interlace_weights_version"), kSteps)
      << "the follower never reached the last step's weights; the run's log: " << dir_->path() << "/followed.log";
  auto r = post(port, "/generate", json({{"input_ids", {10, 20, 30}}, {"sampling_params", {{"max_new_tokens", 4}, {"temperature", 0}}}}).dump());
  ASSERT_TRUE(r && r->status == 200);
  const json answer = json::parse(r->body);
  ASSERT_EQ(answer["versions"].size(), 4u) << r->body;
  for (const json& v : answer["versions"]) EXPECT_EQ(v, kSteps);
  const double payload = double(std::filesystem::file_size(initial + "/model.safetensors"));
  const double fetched = metric(metrics_port, "interlace_weight_sync_bytes_total");
  std::printf("fetched %.1f payloads of %.0f bytes for %d versions\n", fetched / payload, payload, kSteps + 1);
  EXPECT_GE(fetched, payload) << "no payload fetched?";
  EXPECT_LE(fetched, (kSteps + 2) * payload * 1.01) << "polls fetched the same weights again";
  EXPECT_EQ(metric(metrics_port, "interlace_weight_sync_failures_total"), 0);
}

// 64 conversations of 5 turns (a tool result in some) at once over 4 workers:
// a follow-up "lands on its prefix" when its worker restored at least the
// previous turn's prompt from its cache (the worker's own count). Cache-aware
// routing against round-robin in the same run; then a worker killed between
// turns: its conversations move to the others and no client sees an error.
TEST_F(Gateway, ASpeculatingWorkerAnswersAsAPlainOneAndExportsItsCounters) {
  // Two workers under the strict profile (decode and verification forwards
  // agree bit for bit there), one speculating with prompt-lookup drafts and
  // serving /metrics; a gateway in front of each.
  worker("plain", {"--precision", "strict"});
  const std::string metrics_file = dir_->path() + "/spec.metrics";
  worker("spec", {"--precision", "strict", "--speculate", "ngram:k=4", "--metrics-listen", "127.0.0.1:0",
                  "--metrics-port-file", metrics_file});
  const int plain = gateway("plain", {worker_endpoint("plain")});
  const int spec = gateway("spec", {worker_endpoint("spec")});
  const int metrics_port = std::atoi(wait_for_file(metrics_file).c_str());
  ASSERT_GT(metrics_port, 0);
  auto generate = [](int port, const json& body) {
    auto r = post(port, "/generate", body.dump());
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : httplib::to_string(r.error()));
    return r ? json::parse(r->body, nullptr, false) : json();
  };
  // Prompts that repeat themselves (what prompt lookup drafts from), greedy and sampled.
  int64_t generated = 0;
  for (int i = 0; i < 6; ++i) {
    json ids = json::array();
    for (int r = 0; r < 4; ++r)
      for (int t = 0; t < 6; ++t) ids.push_back(10 + 7 * i + t);
    const json body = {{"input_ids", ids},
                       {"sampling_params", {{"max_new_tokens", 32}, {"temperature", i % 2 ? 0.8 : 0.0}, {"seed", i}}}};
    const json a = generate(plain, body), b = generate(spec, body);
    ASSERT_EQ(a["output_ids"].size(), 32u) << a.dump();
    EXPECT_EQ(b["output_ids"], a["output_ids"]) << "prompt " << i;
    EXPECT_EQ(b["logprobs"], a["logprobs"]) << "prompt " << i;
    generated += 32;
  }
  // The worker's own counters, scraped as Prometheus would (updated just after the last event went out).
  for (int i = 0; i < 100 && metric(metrics_port, "interlace_requests_finished_total") < 6; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const double drafted = metric(metrics_port, "interlace_spec_draft_tokens_total");
  const double accepted = metric(metrics_port, "interlace_spec_accepted_tokens_total");
  const double rejected = metric(metrics_port, "interlace_spec_rejected_tokens_total");
  EXPECT_GT(metric(metrics_port, "interlace_spec_verifications_total"), 0);
  EXPECT_GT(drafted, 0);
  EXPECT_EQ(accepted + rejected, drafted);
  EXPECT_EQ(metric(metrics_port, "interlace_requests_finished_total"), 6);
  // Each request's first token comes from its prefill's logits, the rest are decoded.
  EXPECT_EQ(metric(metrics_port, "interlace_decode_tokens_total"), double(generated - 6));
  std::printf("speculating worker: %.0f drafted, %.0f accepted over %lld tokens\n", drafted, accepted,
              static_cast<long long>(generated));
}

// The routing index follows what the worker's cache holds, from its cache
// events: a prefix the worker evicted stops being routed to as a hit (an
// index of what the gateway sent would still call it one, and the worker
// would recompute it: a miss).
TEST_F(Gateway, TheRoutingIndexFollowsTheWorkersEvictions) {
  // A 1 MB cache: about four checkpoints of the tiny hybrid (7 lightning layers, 224 KiB of state each).
  worker("small-cache", {"--cache-bytes", "1000000"});
  const int port = gateway("evicting", {worker_endpoint("small-cache")});
  const std::string snapshots = "interlace_gateway_cache_events_total{kind=\"snapshot\"}";
  for (int i = 0; i < 250 && metric(port, snapshots) < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GE(metric(port, snapshots), 1) << "the gateway never synced with the worker's cache events";
  const std::string hits = "interlace_gateway_routing_decisions_total{reason=\"prefix_hit\"}";
  const std::string entries = "interlace_gateway_prefix_index_entries";
  auto ask = [&](const json& messages) {
    auto r = post(port, "/v1/chat/completions", json({{"messages", messages}, {"max_tokens", 6}, {"seed", 5}, {"ignore_eos", true}}).dump());
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : httplib::to_string(r.error()));
    return r && r->status == 200 ? json::parse(r->body) : json();
  };
  // Events are published as the step that stored them ends, before the answer is read here; a moment covers the socket.
  auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
  json messages = {{{"role", "user"}, {"content", "Remember the number 417, the colour teal and the city of Lyon for later."}}};
  const json first = ask(messages);
  messages.push_back(first["choices"][0]["message"]);
  messages.push_back({{"role", "user"}, {"content", "Add 1."}});
  settle();
  EXPECT_GT(metric(port, entries), 0);
  const double hits_before = metric(port, hits);
  const json second = ask(messages);
  EXPECT_EQ(metric(port, hits), hits_before + 1) << "turn two's prefix is held: a prefix hit (prompts of " << first["usage"]
                                                 << " then " << second["usage"] << ")";
  EXPECT_GE(second["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), first["usage"]["prompt_tokens"].get<int64_t>() - 1);
  // Longer prompts push turn one out of the 1 MB cache.
  for (int i = 0; i < 8; ++i) {
    std::string filler = "Other task " + std::to_string(i) + ":";
    for (int k = 0; k < 12; ++k) filler += " item " + std::to_string(i * 100 + k);
    ask({{{"role", "user"}, {"content", filler}}});
  }
  settle();
  EXPECT_LE(metric(port, entries), 5) << "the index lists more than a 1 MB cache can hold";
  const json again = ask(messages);
  EXPECT_EQ(metric(port, hits), hits_before + 1) << "an evicted prefix was routed to as a hit";
  EXPECT_LT(again["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), first["usage"]["prompt_tokens"].get<int64_t>())
      << "turn one was not evicted: the test proves nothing";
  EXPECT_EQ(metric(port, "interlace_gateway_prefix_misses_total"), 0);
  EXPECT_EQ(metric(port, "interlace_gateway_cache_events_total{kind=\"lost\"}"), 0);
  EXPECT_GT(metric(port, "interlace_gateway_cache_events_total{kind=\"applied\"}"), 5);
}

// With the control plane's Redis: serving workers register there and gateways
// find them (one that starts later too), and a session pinned through one
// gateway replica is routed to the same worker by another. Redis going away
// costs the pins, not the requests.
TEST_F(Gateway, RegisteredWorkersAreFoundAndReplicasShareSessionPins) {
  test::RedisServer redis;
  const std::string address = "127.0.0.1:" + std::to_string(redis.port());
  {
    // Entries a gateway must survive: a field of the wrong type, an endpoint that is not tcp://HOST:PORT.
    auto client = control::RedisClient::connect({.host = "127.0.0.1", .port = redis.port()});
    ASSERT_TRUE(client.ok());
    for (const auto& [name, entry] : std::vector<std::pair<std::string, std::string>>{
             {"garbled", R"({"kind": "serving", "endpoint": 5600, "pid": "twelve"})"},
             {"elsewhere", R"({"kind": "serving", "endpoint": "ipc:///tmp/nowhere"})"}}) {
      ASSERT_TRUE((*client)->command({"SET", "interlace:worker:" + name, entry, "EX", "60"}).ok());
      ASSERT_TRUE((*client)->command({"SADD", "interlace:workers", name}).ok());
    }
  }
  worker("registered-0", {"--redis", address, "--name", "serving-0"});
  const int a = gateway("replica-a", {}, {"--redis", address});
  const int b = gateway("replica-b", {}, {"--redis", address});
  auto wait_for = [](int port, const std::string& ready) {
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 500; ++i) {
      auto r = c.Get("/readyz");
      if (r && r->body.starts_with(ready)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  ASSERT_TRUE(wait_for(a, "1 of 1")) << "replica A did not find the registered worker";
  worker("registered-1", {"--redis", address, "--name", "serving-1"});
  ASSERT_TRUE(wait_for(a, "2 of 2")) << "a worker registered later was not added";
  ASSERT_TRUE(wait_for(b, "2 of 2"));
  {
    auto client = control::RedisClient::connect({.host = "127.0.0.1", .port = redis.port()});
    ASSERT_TRUE(client.ok());
    auto entries = control::WorkerRegistry(**client).list();
    ASSERT_TRUE(entries.ok());
    int serving = 0;
    for (const auto& e : *entries) serving += e.kind == "serving" && e.endpoint.starts_with("tcp://127.0.0.1:");
    EXPECT_EQ(serving, 2);
  }

  auto ask = [](int port, const std::string& session, const std::string& text) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60);
    auto r = c.Post("/v1/chat/completions",
                    {{"Authorization", std::string("Bearer ") + kToken}, {"X-Session-Id", session}},
                    json({{"messages", {{{"role", "user"}, {"content", text}}}}, {"max_tokens", 2}}).dump(), "application/json");
    return r ? r->status : -1;
  };
  const std::string pinned = "interlace_gateway_routing_decisions_total{reason=\"session\"}";
  for (int i = 0; i < 6; ++i) {
    const std::string session = "conversation-" + std::to_string(i);
    ASSERT_EQ(ask(a, session, "first turn of " + session), 200);
    // The same session through the other replica, with a prompt nothing is cached for: only the pin can route it.
    const double before = metric(b, pinned);
    ASSERT_EQ(ask(b, session, "something else entirely, number " + std::to_string(i)), 200);
    EXPECT_EQ(metric(b, pinned), before + 1) << session << ": replica B did not follow the pin replica A made";
  }
  redis.kill9();
  EXPECT_EQ(ask(a, "conversation-0", "Redis is away"), 200) << "a session store that is down must not fail requests";
  EXPECT_GE(metric(a, "interlace_gateway_session_store_errors_total"), 1);
}

TEST_F(Gateway, CacheAwareRoutingSendsFollowUpsWhereTheirPrefixIs) {
  std::vector<std::string> endpoints;
  std::vector<pid_t> four;
  for (int i = 0; i < 4; ++i) {
    four.push_back(worker("r" + std::to_string(i)));
    endpoints.push_back(worker_endpoint("r" + std::to_string(i)));
  }
  const int aware = gateway("aware", endpoints);
  const int round_robin = gateway("round-robin", endpoints, {"--routing", "round_robin"});
  for (int port : {aware, round_robin}) {
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 250; ++i) {
      auto r = c.Get("/readyz");
      if (r && r->body.starts_with("4 of 4")) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  struct Tally {
    int follow_ups = 0, on_prefix = 0, errors = 0;
  };
  // Runs the conversations turn by turn (all of a turn at once); BETWEEN(t) runs before turn t.
  auto converse = [](int port, const std::string& tag, const std::function<void(int)>& between) {
    constexpr int kConversations = 64, kTurns = 5;
    std::vector<json> messages(kConversations, json::array());
    std::vector<int64_t> last_prompt(kConversations, 0);
    Tally tally;
    std::mutex mu;
    // Each turn's requests start in a fresh random order: in a fixed order a
    // slow machine (TSan) hands round-robin the same worker for a
    // conversation every turn, and the baseline would look cache-aware.
    std::vector<int> order(kConversations);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937 rng(std::random_device{}());
    for (int turn = 0; turn < kTurns; ++turn) {
      between(turn);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<std::thread> threads;
      for (int c : order)
        threads.emplace_back([&, c] {
          json& m = messages[size_t(c)];
          // A longer first question, short follow-ups (as in an agent's episode).
          const std::string cs = std::to_string(c);
          m.push_back({{"role", "user"},
                       {"content", turn == 0 ? tag + " conversation " + cs + ": a shop sells pens at 3 each and books at 7 each; " +
                                                   "what do " + cs + " pens and " + cs + " books cost together?"
                                             : "and with " + std::to_string(turn) + " more?"}});
          auto r = post(port, "/v1/chat/completions",
                        json({{"messages", m}, {"max_tokens", 6}, {"seed", c * 10 + turn}, {"ignore_eos", true}}).dump());
          std::lock_guard<std::mutex> lock(mu);
          if (!r || r->status != 200) {
            if (++tally.errors <= 3)
              ADD_FAILURE() << "turn " << turn << " of conversation " << c << ": "
                            << (r ? std::to_string(r->status) + " " + r->body : httplib::to_string(r.error()));
            return;
          }
          const json answer = json::parse(r->body);
          if (turn > 0) {
            ++tally.follow_ups;
            tally.on_prefix += answer["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>() >= last_prompt[size_t(c)] - 16;
          }
          last_prompt[size_t(c)] = answer["usage"]["prompt_tokens"];
          m.push_back(answer["choices"][0]["message"]);
          if (turn % 2 == 1) m.push_back({{"role", "tool"}, {"content", std::to_string(10 * c + turn)}});
        });
      for (auto& t : threads) t.join();
    }
    return tally;
  };
  const Tally by_prefix = converse(aware, "A", [](int) {});
  const Tally by_turn = converse(round_robin, "B", [](int) {});
  std::printf("follow-ups on their prefix: cache-aware %d/%d, round-robin %d/%d\n", by_prefix.on_prefix, by_prefix.follow_ups,
              by_turn.on_prefix, by_turn.follow_ups);
  EXPECT_EQ(by_prefix.errors + by_turn.errors, 0);
  EXPECT_EQ(by_prefix.follow_ups, 64 * 4);
  EXPECT_GE(by_prefix.on_prefix, 0.9 * by_prefix.follow_ups);
  EXPECT_LT(by_turn.on_prefix, 0.5 * by_turn.follow_ups) << "round-robin should mostly miss: is the measure measuring anything?";
  EXPECT_GT(metric(aware, "interlace_gateway_routing_decisions_total{reason=\"prefix_hit\"}"), 200);
  EXPECT_GE(metric(aware, "interlace_gateway_cache_events_total{kind=\"snapshot\"}"), 4) << "one per worker at least";
  EXPECT_GT(metric(aware, "interlace_gateway_cache_events_total{kind=\"applied\"}"), 64);
  EXPECT_EQ(metric(aware, "interlace_gateway_cache_events_total{kind=\"lost\"}"), 0);

  // A worker lost between turns 2 and 3: no client error, its conversations
  // (about a quarter) miss once and then stay on their new worker.
  const Tally survived = converse(aware, "C", [&](int turn) {
    if (turn == 3) {
      test::kill_group(four[0], SIGKILL);
      httplib::Client c("127.0.0.1", aware);
      for (int i = 0; i < 250; ++i) {
        auto r = c.Get("/readyz");
        if (r && r->body.starts_with("3 of 4")) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  });
  std::printf("with a worker killed before turn 3: %d/%d follow-ups on their prefix, %d errors\n", survived.on_prefix,
              survived.follow_ups, survived.errors);
  EXPECT_EQ(survived.errors, 0);
  EXPECT_EQ(survived.follow_ups, 64 * 4);
  EXPECT_LT(survived.on_prefix, survived.follow_ups) << "the killed worker's conversations must have missed once";
  EXPECT_GE(survived.on_prefix, survived.follow_ups - 64 / 4 - 16);
}

}  // namespace
}  // namespace interlace::serving
