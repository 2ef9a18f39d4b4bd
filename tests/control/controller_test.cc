// The controller's HTTP API against a real redis-server: auth, bad input (each
// with its status code and message, nothing stored), two stateless replicas
// on one Redis, a Redis restart under a running controller; and the CLI
// (`interlace serve controller`, submit, jobs, status, cancel, logs) as
// separate processes.
#include "interlace/control/controller.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "support/redis_server.h"

namespace interlace::control {
namespace {

using nlohmann::json;

constexpr const char* kToken = "test-token-123";

std::unique_ptr<Controller> start_controller(const test::RedisServer& redis) {
  ControllerOptions o;
  o.redis = {.host = "127.0.0.1", .port = redis.port()};
  o.port = 0;
  o.token = kToken;
  auto c = Controller::start(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

struct Reply {
  int status = 0;
  json body;
};

Reply request(int port, const std::string& method, const std::string& path, const std::string& body = "",
              const std::string& token = kToken) {
  httplib::Client client("127.0.0.1", port);
  if (!token.empty()) client.set_bearer_token_auth(token);
  auto r = method == "POST" ? client.Post(path, body, "application/json") : client.Get(path);
  if (!r) return {};
  return {r->status, json::parse(r->body, nullptr, false)};
}

std::string example_spec() {
  std::ifstream in(std::string(INTERLACE_SOURCE_DIR) + "/examples/calculator/job.yaml");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Controller, TokensAreRequiredExceptForProbes) {
  test::RedisServer redis;
  auto c = start_controller(redis);
  EXPECT_EQ(request(c->port(), "GET", "/healthz", "", "").status, 200);
  EXPECT_EQ(request(c->port(), "GET", "/readyz", "", "").status, 200);
  for (const std::string token : {"", "wrong", "test-token-12", "test-token-1234"}) {
    const Reply r = request(c->port(), "GET", "/v1/jobs", "", token);
    EXPECT_EQ(r.status, 401) << "token '" << token << "'";
    EXPECT_EQ(r.body, json({{"error", "unauthorized"}})) << "a 401 says nothing more";
  }
  EXPECT_EQ(request(c->port(), "POST", "/v1/jobs", json({{"spec", example_spec()}}).dump(), "wrong").status, 401);
  EXPECT_EQ(request(c->port(), "GET", "/v1/jobs").body["jobs"].size(), 0u) << "an unauthorized submit stored a job";
}

// /metrics needs no token (Prometheus scrapes it) and counts requests by
// route (ids folded into "ID") and code, and the jobs queued and running.
TEST(Controller, MetricsCountRequestsByRouteAndJobsByState) {
  test::RedisServer redis;
  auto c = start_controller(redis);
  const Reply a = request(c->port(), "POST", "/v1/jobs", json({{"spec", example_spec()}}).dump());
  ASSERT_EQ(a.status, 201);
  ASSERT_EQ(request(c->port(), "POST", "/v1/jobs", json({{"spec", example_spec()}}).dump()).status, 201);
  ASSERT_EQ(request(c->port(), "POST", "/v1/jobs/" + a.body["id"].get<std::string>() + "/cancel").status, 200);
  EXPECT_EQ(request(c->port(), "GET", "/v1/jobs/job-99").status, 404);
  EXPECT_EQ(request(c->port(), "GET", "/v1/jobs", "", "wrong").status, 401);
  httplib::Client client("127.0.0.1", c->port());
  auto r = client.Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  for (const std::string line : {"interlace_controller_requests_total{code=\"201\",route=\"/v1/jobs\"} 2",
                                 "interlace_controller_requests_total{code=\"200\",route=\"/v1/jobs/ID/cancel\"} 1",
                                 "interlace_controller_requests_total{code=\"404\",route=\"/v1/jobs/ID\"} 1",
                                 "interlace_controller_requests_total{code=\"401\",route=\"/v1/jobs\"} 1",
                                 "interlace_controller_jobs{state=\"queued\"} 1",
                                 "interlace_controller_jobs{state=\"running\"} 0",
                                 "interlace_controller_redis_up 1"})
    EXPECT_NE(r->body.find(line + "\n"), std::string::npos) << line << " not in\n" << r->body;
  EXPECT_EQ(r->body.find("job-1"), std::string::npos) << "a job id became a label";
}

TEST(Controller, BadInputIsRefusedWithWhatWasWrongAndNothingIsStored) {
  test::RedisServer redis;
  auto c = start_controller(redis);
  const int p = c->port();
  struct Case {
    std::string body;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"not json", 400, "not valid JSON"},
      {"[1,2]", 400, "JSON object"},
      {json({{"spec", "name: x"}, {"priority", "high"}}).dump(), 400, "unknown field 'priority'"},
      {json({{"spec", 42}}).dump(), 400, "'spec' must be a string"},
      {json({{"kind", "serve"}, {"spec", "a: 1"}}).dump(), 400, "unknown job kind 'serve'"},
      {json({{"name", "x"}}).dump(), 400, "'spec'"},
      {json({{"spec", "name: x\nsft:\n  steps: -3\n"}}).dump(), 400, "spec:3: sft.steps"},
      {json({{"spec", "name: [unclosed"}}).dump(), 400, "not valid YAML"},
      {json({{"kind", "rollout"}, {"spec", "env: calculator\nprompts: 4\n"}}).dump(), 400, "exactly one of 'model: DIR'"},
      {json({{"kind", "rollout"}, {"spec", "model: /m\nfrom_job: job-1\n"}}).dump(), 400, "exactly one of"},
      {json({{"kind", "rollout"}, {"spec", "model: /m\nprompts: 0\n"}}).dump(), 400, "spec:2: prompts"},
      {json({{"kind", "rollout"}, {"spec", "model: /m\nenv: nowhere\n"}}).dump(), 400, "spec:2: env"},
      {json({{"kind", "rollout"}, {"spec", "model: /m\nalgorithm: grpo\n"}}).dump(), 400, "spec:2: algorithm: unknown key"},
      {json({{"kind", "rollout"}, {"spec", "from_job: ../../etc\n"}}).dump(), 400, "expected a job id"},
      {std::string(2 << 20, 'x'), 413, "larger than"},
  };
  for (const Case& k : cases) {
    const Reply r = request(p, "POST", "/v1/jobs", k.body);
    EXPECT_EQ(r.status, k.status) << k.body.substr(0, 80);
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << k.body.substr(0, 80);
    EXPECT_NE(r.body["error"].get<std::string>().find(k.says), std::string::npos) << r.body["error"];
  }
  EXPECT_EQ(request(p, "GET", "/v1/jobs").body["jobs"].size(), 0u) << "a refused submission was stored";
  EXPECT_EQ(request(p, "GET", "/v1/jobs/job-1/results").status, 404);
  EXPECT_EQ(request(p, "GET", "/v1/jobs/job-7").status, 404);
  EXPECT_EQ(request(p, "POST", "/v1/jobs/job-7/cancel").status, 404);
  EXPECT_EQ(request(p, "GET", "/v1/jobs/job-7/events").status, 404);
  EXPECT_EQ(request(p, "GET", "/v1/jobs/job-7/results").status, 404);
  const Reply queued = request(p, "POST", "/v1/jobs", json({{"kind", "rollout"}, {"spec", "model: /m\n"}}).dump());
  ASSERT_EQ(queued.status, 201) << queued.body;
  const Reply none = request(p, "GET", "/v1/jobs/" + queued.body["id"].get<std::string>() + "/results");
  EXPECT_EQ(none.status, 404);
  EXPECT_NE(none.body.value("error", "").find("has no results yet (it is queued)"), std::string::npos) << none.body;
  EXPECT_EQ(request(p, "POST", "/v1/jobs/" + queued.body["id"].get<std::string>() + "/cancel").status, 200);
  EXPECT_EQ(request(p, "GET", "/v1/jobs?limit=0").status, 400);
  EXPECT_EQ(request(p, "GET", "/v1/jobs?limit=abc").status, 400);
  EXPECT_EQ(request(p, "GET", "/v1/nothing").status, 404);
}

// Stateless: a job submitted through one controller is seen and cancelled
// through another; a restarted Redis (AOF) is ridden out.
TEST(Controller, ReplicasShareEverythingThroughRedisAndSurviveItsRestart) {
  test::RedisServer redis;
  auto a = start_controller(redis);
  auto b = start_controller(redis);
  const Reply submitted = request(a->port(), "POST", "/v1/jobs", json({{"spec", example_spec()}}).dump());
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  const std::string id = submitted.body["id"];
  const Reply seen = request(b->port(), "GET", "/v1/jobs/" + id);
  EXPECT_EQ(seen.status, 200);
  EXPECT_EQ(seen.body["name"], "calculator-grpo") << "the spec's name is the default";
  EXPECT_EQ(seen.body["state"], "queued");
  redis.kill9();
  EXPECT_EQ(request(a->port(), "GET", "/readyz", "", "").status, 503) << "ready without Redis";
  redis.start();
  const Reply cancelled = request(a->port(), "POST", "/v1/jobs/" + id + "/cancel");
  EXPECT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(cancelled.body["state"], "cancelled");
  EXPECT_EQ(request(b->port(), "POST", "/v1/jobs/" + id + "/cancel").status, 409) << "cancelled twice";
  const Reply events = request(b->port(), "GET", "/v1/jobs/" + id + "/events");
  ASSERT_EQ(events.status, 200);
  ASSERT_EQ(events.body["events"].size(), 2u);
  EXPECT_EQ(events.body["events"][1]["message"], "cancelled: cancelled by a user");
  EXPECT_EQ(request(a->port(), "GET", "/readyz", "", "").status, 200);
}

struct CliRun {
  int code = -1;
  std::string out;
};
CliRun cli_shell(const std::string& cmd_line) {
  const std::string cmd = cmd_line + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  CliRun r;
  std::array<char, 4096> buf{};
  while (p && std::fgets(buf.data(), buf.size(), p)) r.out += buf.data();
  if (p) r.code = WEXITSTATUS(::pclose(p));
  return r;
}
CliRun cli(const std::string& args, const std::string& env) { return cli_shell(env + " " + INTERLACE_BIN + " " + args); }

TEST(Controller, TheCliSubmitsListsFollowsAndCancels) {
  test::RedisServer redis;
  const int port = test::free_loopback_port();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  const pid_t server = ::fork();
  if (server == 0) {
    ::setenv("INTERLACE_TOKEN", kToken, 1);
    const std::string r = "127.0.0.1:" + std::to_string(redis.port());
    ::execl(INTERLACE_BIN, INTERLACE_BIN, "serve", "controller", "--redis", r.c_str(), "--listen", listen.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 200 && request(port, "GET", "/healthz", "", "").status != 200; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string env = std::string("INTERLACE_SERVER=http://") + listen + " INTERLACE_TOKEN=" + kToken;
  const std::string job = std::string(INTERLACE_SOURCE_DIR) + "/examples/calculator/job.yaml";
  const CliRun first = cli("submit " + job, env);
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_NE(first.out.find("job-1\n"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("interlace logs job-1 -f"), std::string::npos) << "says what to run next";
  ASSERT_EQ(cli("submit " + job + " --name second -o json", env).code, 0);
  const CliRun jobs = cli("jobs -o json", env);
  ASSERT_EQ(jobs.code, 0) << jobs.out;
  const json list = json::parse(jobs.out);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["name"], "second");
  const CliRun table = cli("jobs", env);
  EXPECT_NE(table.out.find("calculator-grpo"), std::string::npos) << table.out;
  EXPECT_EQ(cli("cancel job-1", env).code, 0);
  const CliRun status = cli("status job-1 -o json", env);
  EXPECT_EQ(json::parse(status.out)["state"], "cancelled") << status.out;
  const CliRun logs = cli("logs job-1 -f", env);  // ends: the job has
  EXPECT_EQ(logs.code, 0) << logs.out;
  EXPECT_NE(logs.out.find("[state] cancelled: cancelled by a user"), std::string::npos) << logs.out;
  const CliRun again = cli("cancel job-1", env);
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.out.find("is cancelled: it cannot become cancelled"), std::string::npos) << again.out;
  const CliRun unknown = cli("status job-99", env);
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.out.find("no job job-99"), std::string::npos) << unknown.out;
  const CliRun no_token = cli("jobs", std::string("INTERLACE_SERVER=http://") + listen + " INTERLACE_TOKEN=");
  EXPECT_EQ(no_token.code, 1);
  EXPECT_NE(no_token.out.find("INTERLACE_TOKEN"), std::string::npos) << no_token.out;
  const CliRun nobody = cli("jobs --server http://127.0.0.1:" + std::to_string(test::free_loopback_port()), env);
  EXPECT_EQ(nobody.code, 1);
  EXPECT_NE(nobody.out.find("no controller at"), std::string::npos) << nobody.out;
  ::kill(server, SIGTERM);
  int st = 0;
  ::waitpid(server, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the controller stops cleanly on SIGTERM";
}

// `interlace up` starts redis-server and a controller that outlive it; the
// control commands find them without --server or a token; `down` stops both,
// and a second `up` on the same directory still has the job (Redis's AOF).
// Exists and is not a zombie (nobody may reap what `up` left behind).
bool running(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

TEST(Controller, UpStartsALocalStackTheCommandsUseAndDownStopsIt) {
  test::TempDir dir;
  const std::string ports = " --port " + std::to_string(test::free_loopback_port()) + " --redis-port " +
                            std::to_string(test::free_loopback_port());
  const std::string env = "INTERLACE_STACK_DIR=" + dir.path() + " INTERLACE_SERVER= INTERLACE_TOKEN=";
  const CliRun up = cli("up --runners 0 -o json" + ports, env);
  ASSERT_EQ(up.code, 0) << up.out;
  const json stack = json::parse(up.out.substr(up.out.find('{')), nullptr, false);
  ASSERT_TRUE(stack.contains("server") && stack.contains("token")) << up.out;
  const CliRun submitted = cli("submit " + std::string(INTERLACE_SOURCE_DIR) + "/examples/calculator/job.yaml -o json", env);
  ASSERT_EQ(submitted.code, 0) << submitted.out;
  const json info = json::parse(std::ifstream(dir.path() + "/stack.json"));
  const int controller = info["controller_pid"], redis = info["redis_pid"];
  EXPECT_TRUE(running(controller));
  EXPECT_TRUE(running(redis));
  // Its Redis wants the password the services were given; a stranger on this machine gets nothing.
  auto stranger = RedisClient::connect(*parse_redis_address(info["redis"].get<std::string>()));
  EXPECT_TRUE(absl::IsPermissionDenied(stranger.status())) << stranger.status();
  EXPECT_NE(std::string(stranger.status().message()).find("INTERLACE_REDIS_PASSWORD"), std::string::npos);
  ASSERT_EQ(cli("down", env).code, 0);
  EXPECT_FALSE(running(controller)) << "the controller outlived `down`";
  EXPECT_FALSE(running(redis)) << "redis-server outlived `down`";
  const CliRun gone = cli("jobs", env);
  EXPECT_EQ(gone.code, 1) << gone.out;
  ASSERT_EQ(cli("up --runners 0" + ports, env).code, 0);
  const CliRun jobs = cli("jobs -o json", env);
  EXPECT_EQ(cli("down", env).code, 0);
  ASSERT_EQ(jobs.code, 0) << jobs.out;
  const json list = json::parse(jobs.out, nullptr, false);
  ASSERT_TRUE(list.is_array()) << jobs.out;
  ASSERT_EQ(list.size(), 1u) << "the job did not survive a down and up";
  EXPECT_EQ(list[0]["state"], "queued");
}

// `up --serve MODEL` also starts serving workers and a gateway with the same
// token: one command to an OpenAI API; `down` stops them too.
TEST(Controller, UpServeStartsAGatewayThatAnswersAndDownStopsIt) {
  test::TempDir dir;
  const std::string model = dir.path() + "/tiny";
  ASSERT_EQ(cli("model init --config " + std::string(INTERLACE_SOURCE_DIR) + "/examples/models/tiny-hybrid.json --out " + model, "").code, 0);
  const int gateway_port = test::free_loopback_port();
  const std::string ports = " --port " + std::to_string(test::free_loopback_port()) + " --redis-port " +
                            std::to_string(test::free_loopback_port()) + " --gateway-port " + std::to_string(gateway_port);
  const std::string env = "INTERLACE_STACK_DIR=" + dir.path() + " INTERLACE_SERVER= INTERLACE_TOKEN=";
  const CliRun up = cli("up --runners 0 --serve " + model + " --serving-workers 2 -o json" + ports, env);
  ASSERT_EQ(up.code, 0) << up.out;
  const json stack = json::parse(up.out.substr(up.out.find('{')), nullptr, false);
  ASSERT_EQ(stack.value("gateway", ""), "http://127.0.0.1:" + std::to_string(gateway_port) + "/v1") << up.out;
  httplib::Client c("127.0.0.1", gateway_port);
  c.set_read_timeout(30);
  auto r = c.Post("/v1/chat/completions", {{"Authorization", "Bearer " + stack["token"].get<std::string>()}},
                  R"({"messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 4})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // The serving workers registered in the stack's Redis: `interlace workers` lists them with their endpoints.
  const CliRun workers = cli("workers -o json", env);
  ASSERT_EQ(workers.code, 0) << workers.out;
  const json listed = json::parse(workers.out.substr(workers.out.find_first_of("[{")), nullptr, false);
  const json& entries = listed.is_object() ? listed["workers"] : listed;
  int serving = 0;
  for (const json& w : entries) serving += w.value("kind", "") == "serving" && w.value("endpoint", "").starts_with("tcp://127.0.0.1:");
  EXPECT_EQ(serving, 2) << workers.out;
  const json info = json::parse(std::ifstream(dir.path() + "/stack.json"));
  ASSERT_EQ(info["runner_pids"].size(), 3u) << "two serving workers and the gateway";
  ASSERT_EQ(cli("down", env).code, 0);
  for (const json& pid : info["runner_pids"]) EXPECT_FALSE(running(pid.get<int>())) << pid << " outlived `down`";
}

// Submitted through a stack `interlace up` started (with one runner), a small
// train job runs to its end (succeeded, its result in the events, its final
// model downloadable); a rollout job with that model runs and its
// trajectories download; a long train job
// is cancelled while it runs and its runner stops it within seconds; a job
// whose services fail ends failed with the reason.
TEST(Controller, AJobSubmittedToTheLocalStackRunsAndACancelledOneStops) {
  test::TempDir dir;
  const std::string ports = " --port " + std::to_string(test::free_loopback_port()) + " --redis-port " +
                            std::to_string(test::free_loopback_port());
  const std::string env = "INTERLACE_STACK_DIR=" + dir.path() + " INTERLACE_SERVER= INTERLACE_TOKEN=";
  ASSERT_EQ(cli("up --runners 1" + ports, env).code, 0);
  auto job_file = [&](const std::string& name, int sft_steps) {
    const std::string path = dir.path() + "/" + name + ".yaml";
    std::ofstream(path) << "name: " << name << "\nenv: \"calculator:max_number=5,short_prompt=1\"\n"
                        << "model: {init: ../../../" << INTERLACE_SOURCE_DIR << "/examples/models/tiny-hybrid.json}\n"
                        << "sft: {demos: 16, steps: " << sft_steps << ", batch_size: 2}\n"
                        << "algorithm: {steps: 1, groups_per_step: 2, group_size: 2}\n"
                        << "rollout: {max_turns: 1, max_turn_tokens: 8}\neval: {prompts: 4, samples: 0}\n";
    return path;
  };
  // The model path is relative (to the spec's directory): submit makes it absolute.
  const CliRun small = cli("submit " + job_file("small", 2), env);
  ASSERT_EQ(small.code, 0) << small.out;
  const CliRun followed = cli("logs job-1 -f", env);  // returns when the job has ended
  EXPECT_EQ(followed.code, 0) << followed.out;
  EXPECT_NE(followed.out.find("[runner] starting on runner-0@local"), std::string::npos) << followed.out;
  EXPECT_NE(followed.out.find("[result] held-out reward"), std::string::npos) << followed.out;
  EXPECT_NE(followed.out.find("[state] succeeded"), std::string::npos) << followed.out;
  // Its results: the final model, as a tar.
  const std::string tar = dir.path() + "/model.tar";
  const CliRun model = cli("results job-1 --out " + tar, env);
  ASSERT_EQ(model.code, 0) << model.out;
  const CliRun listed = cli_shell("tar -tf " + tar);
  EXPECT_NE(listed.out.find("final-model/config.json"), std::string::npos) << listed.out;
  // A rollout job with that model (from_job), waited on; its trajectories downloaded.
  const std::string rollout = dir.path() + "/rollout.yaml";
  std::ofstream(rollout) << "name: eval\nfrom_job: job-1\nenv: \"calculator:max_number=5,short_prompt=1\"\n"
                         << "prompts: 3\ngroup_size: 2\nmax_turns: 1\nmax_new_tokens: 8\neval: true\n";
  const CliRun waited = cli("submit " + rollout + " --kind rollout --wait", env);
  ASSERT_EQ(waited.code, 0) << waited.out;
  EXPECT_NE(waited.out.find("[result] 6 trajectories, mean reward"), std::string::npos) << waited.out;
  const std::string traj = dir.path() + "/traj.jsonl";
  ASSERT_EQ(cli("results job-2 --out " + traj, env).code, 0);
  std::ifstream in(traj);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json t = json::parse(line, nullptr, false);
    ASSERT_TRUE(t.is_object() && t.contains("tokens") && t.contains("reward")) << line.substr(0, 200);
  }
  EXPECT_EQ(lines, 6) << "3 prompts x 2 samples";
  // A rollout job whose train job did not succeed fails, saying why.
  std::ofstream(rollout) << "from_job: job-2\nprompts: 1\n";
  const CliRun wrong = cli("submit " + rollout + " --kind rollout --wait", env);
  EXPECT_EQ(wrong.code, 1) << wrong.out;
  EXPECT_NE(wrong.out.find("job-2 is a rollout job"), std::string::npos) << wrong.out;

  ASSERT_EQ(cli("submit " + job_file("long", 100000), env).code, 0);
  for (int i = 0; i < 300; ++i) {
    const CliRun st = cli("status job-4 -o json", env);
    if (st.code == 0 && json::parse(st.out, nullptr, false).value("state", "") == "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The runner's heartbeat says it is busy with it (within a beat of the claim).
  bool busy = false;
  for (int i = 0; i < 50 && !busy; ++i) {
    const CliRun w = cli("workers -o json", env);
    const json list = json::parse(w.out, nullptr, false);
    busy = w.code == 0 && list.is_array() && list.size() == 1 && list[0]["name"] == "runner-0@local" &&
           list[0]["state"] == "busy" && list[0]["job"] == "job-4";
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(busy) << cli("workers -o json", env).out;
  EXPECT_NE(cli("workers", env).out.find("runner-0@local"), std::string::npos);
  const CliRun top = cli("top --once", env);
  EXPECT_EQ(top.code, 0) << top.out;
  EXPECT_NE(top.out.find("interlace top: 1 running, 0 queued (of the newest 20); 1 runners, 1 busy"), std::string::npos)
      << top.out;
  ASSERT_EQ(cli("cancel job-4", env).code, 0);
  const auto cancelled_at = std::chrono::steady_clock::now();
  bool stopped = false;
  while (!stopped && std::chrono::steady_clock::now() - cancelled_at < std::chrono::seconds(30)) {
    stopped = cli("logs job-4", env).out.find("stopped: the job was cancelled") != std::string::npos;
    if (!stopped) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(stopped) << "the runner did not stop a cancelled job within 30 s";
  // The runner is free again: a job it cannot run fails, with the reason.
  const std::string broken = dir.path() + "/broken.yaml";
  std::ofstream(broken) << "name: broken\nmodel: {init: /nonexistent/model.json}\n";
  ASSERT_EQ(cli("submit " + broken, env).code, 0);
  const CliRun failed = cli("logs job-5 -f", env);
  EXPECT_EQ(failed.code, 1) << "logs -f exits 1 when the job fails: " << failed.out;
  EXPECT_NE(failed.out.find("[state] failed: "), std::string::npos) << failed.out;
  EXPECT_NE(failed.out.find("/nonexistent/model.json"), std::string::npos) << failed.out;
  EXPECT_EQ(cli("down", env).code, 0);
}

}  // namespace
}  // namespace interlace::control
