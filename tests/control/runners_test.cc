// Runners and controllers as separate processes on one real redis-server, the
// way a deployment runs them: two controllers and two runners, ten jobs
// submitted at once through both, each runs exactly once; a runner killed
// with its whole process group (what a container's death is) loses nothing:
// its job is queued again when its heartbeat lapses and the other runner
// finishes it.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "interlace/control/job_store.h"
#include "nlohmann/json.hpp"
#include "support/child_process.h"
#include "support/redis_server.h"

namespace interlace::control {
namespace {

using test::kill_group;
using test::start_group;

using nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr const char* kToken = "runners-test-token";



struct Stack {
  test::RedisServer redis;
  test::TempDir dir;
  std::vector<int> controller_ports;
  std::vector<pid_t> pids;
  std::string redis_address() const { return "127.0.0.1:" + std::to_string(redis.port()); }

  void controller() {
    const int port = test::free_loopback_port();
    pids.push_back(start_group({INTERLACE_BIN, "serve", "controller", "--redis", redis_address(), "--listen",
                          "127.0.0.1:" + std::to_string(port), "--token", kToken}));
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 300 && !c.Get("/healthz"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    controller_ports.push_back(port);
  }
  pid_t runner(const std::string& name) {
    pids.push_back(start_group({INTERLACE_BIN, "serve", "runner", "--redis", redis_address(), "--dir", dir.path() + "/jobs",
                          "--name", name, "--poll", "0.2"}));
    return pids.back();
  }
  // A pool role: `serve learner|worker --redis`.
  pid_t pool(const std::string& role, const std::string& name) {
    pids.push_back(start_group({INTERLACE_BIN, "serve", role, "--redis", redis_address(), "--dir", dir.path() + "/jobs",
                          "--name", name, "--poll", "0.2"}));
    return pids.back();
  }
  ~Stack() {
    for (pid_t p : pids) kill_group(p, SIGKILL);
  }

  json call(int i, const std::string& method, const std::string& path, const json& body = nullptr) {
    httplib::Client c("127.0.0.1", controller_ports[i % controller_ports.size()]);
    c.set_bearer_token_auth(kToken);
    auto r = method == "POST" ? c.Post(path, body.is_null() ? "" : body.dump(), "application/json") : c.Get(path);
    return r ? json::parse(r->body, nullptr, false) : json();
  }
  std::string model() {
    const std::string out = dir.path() + "/model";
    const std::string cmd = std::string(INTERLACE_BIN) + " model init --config " + INTERLACE_SOURCE_DIR +
                            "/examples/models/tiny-hybrid.json --out " + out + " > /dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    return out;
  }
  // Waits until every job has ended; false after `seconds`.
  bool all_ended(const std::vector<std::string>& ids, double seconds) {
    const auto t0 = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
      bool ended = true;
      for (const auto& id : ids) {
        const std::string s = call(0, "GET", "/v1/jobs/" + id).value("state", "");
        ended = ended && (s == "succeeded" || s == "failed" || s == "cancelled");
      }
      if (ended) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  std::vector<std::string> event_messages(const std::string& id) {
    std::vector<std::string> out;
    for (const json& e : call(0, "GET", "/v1/jobs/" + id + "/events").value("events", json::array()))
      out.push_back(e["type"].get<std::string>() + ": " + e["message"].get<std::string>());
    return out;
  }
};

std::string rollout_spec(const std::string& model, int prompts, int group, int tokens) {
  return "model: " + model + "\nenv: \"calculator:max_number=5,short_prompt=1\"\nprompts: " + std::to_string(prompts) +
         "\ngroup_size: " + std::to_string(group) + "\nmax_turns: 1\nmax_new_tokens: " + std::to_string(tokens) + "\n";
}

int count_prefix(const std::vector<std::string>& lines, const std::string& prefix) {
  int n = 0;
  for (const auto& l : lines) n += l.rfind(prefix, 0) == 0;
  return n;
}

TEST(Runners, TenJobsThroughTwoControllersAndTwoRunnersEachRunExactlyOnce) {
  Stack s;
  s.controller();
  s.controller();
  const std::string model = s.model();
  s.runner("r1");
  s.runner("r2");
  std::vector<std::string> ids(10);
  std::vector<std::thread> clients;
  for (int i = 0; i < 10; ++i)
    clients.emplace_back([&, i] {
      ids[i] = s.call(i, "POST", "/v1/jobs", {{"kind", "rollout"}, {"spec", rollout_spec(model, 2, 2, 8)}}).value("id", "");
    });
  for (auto& t : clients) t.join();
  for (const auto& id : ids) ASSERT_FALSE(id.empty()) << "a submission failed";
  ASSERT_TRUE(s.all_ended(ids, 120)) << "not every job ended within 120 s";
  std::set<std::string> owners;
  for (const auto& id : ids) {
    const json job = s.call(1, "GET", "/v1/jobs/" + id);
    EXPECT_EQ(job["state"], "succeeded") << job.dump();
    owners.insert(job["owner"]);
    const auto events = s.event_messages(id);
    EXPECT_EQ(count_prefix(events, "runner: starting on"), 1) << id << " ran other than once";
    std::ifstream in(s.dir.path() + "/jobs/" + id + "/trajectories.jsonl");
    int lines = 0;
    for (std::string l; std::getline(in, l);) ++lines;
    EXPECT_EQ(lines, 4) << id;
  }
  EXPECT_EQ(owners.size(), 2u) << "one runner did all ten";
  const json workers = s.call(0, "GET", "/v1/workers");
  EXPECT_EQ(workers["workers"].size(), 2u) << workers.dump();
}

TEST(Runners, AJobWhoseRunnerIsKilledIsQueuedAgainAndFinishedByAnother) {
  Stack s;
  s.controller();
  const std::string model = s.model();
  const pid_t first = s.runner("r1");
  // Long enough to be killed in the middle (hundreds of episodes of 64 tokens).
  const std::string id =
      s.call(0, "POST", "/v1/jobs", {{"kind", "rollout"}, {"spec", rollout_spec(model, 64, 8, 64)}}).value("id", "");
  ASSERT_FALSE(id.empty());
  bool running = false;
  for (int i = 0; i < 300 && !running; ++i) {
    running = s.call(0, "GET", "/v1/jobs/" + id).value("state", "") == "running";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(running);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  kill_group(first, SIGKILL);  // the runner and its `interlace rollout`, as a container dies
  s.runner("r2");
  ASSERT_TRUE(s.all_ended({id}, 180)) << "the job was not finished by the other runner";
  const json job = s.call(0, "GET", "/v1/jobs/" + id);
  EXPECT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["owner"], "r2");
  const auto events = s.event_messages(id);
  std::string all;
  for (const auto& e : events) all += e + "\n";
  EXPECT_EQ(count_prefix(events, "state: queued again: its runner r1 stopped heartbeating"), 1) << all;
  EXPECT_EQ(count_prefix(events, "runner: starting on r2"), 1) << all;
  std::ifstream in(s.dir.path() + "/jobs/" + id + "/trajectories.jsonl");
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 512) << "64 tasks x 8 samples, each once";
}

// Ten small train jobs submitted at once through two controllers to two pool
// learners and two workers: each runs exactly once, on one learner, and
// gets a worker from the controllers' scheduling passes.
TEST(Pool, TenTrainJobsThroughTwoControllersAndTwoLearnersEachRunExactlyOnce) {
  Stack s;
  s.controller();
  s.controller();
  s.pool("learner", "l1");
  s.pool("learner", "l2");
  s.pool("worker", "w1");
  s.pool("worker", "w2");
  const std::string spec = "env: \"calculator:max_number=5,short_prompt=1\"\n"
                           "model: {init: " + std::string(INTERLACE_SOURCE_DIR) + "/examples/models/tiny-hybrid.json}\n"
                           "algorithm: {steps: 1, groups_per_step: 1, group_size: 2}\n"
                           "rollout: {workers: 1, max_turns: 1, max_turn_tokens: 8}\neval: {prompts: 1, samples: 0}\n";
  std::vector<std::string> ids(10);
  std::vector<std::thread> clients;
  for (int i = 0; i < 10; ++i)
    clients.emplace_back([&, i] {
      ids[i] = s.call(i, "POST", "/v1/jobs", {{"kind", "train"}, {"spec", "name: t" + std::to_string(i) + "\n" + spec}})
                   .value("id", "");
    });
  for (auto& t : clients) t.join();
  for (const auto& id : ids) ASSERT_FALSE(id.empty()) << "a submission failed";
  ASSERT_TRUE(s.all_ended(ids, 300)) << "not every job ended within 300 s";
  std::set<std::string> owners;
  for (const auto& id : ids) {
    const json job = s.call(1, "GET", "/v1/jobs/" + id);
    EXPECT_EQ(job["state"], "succeeded") << job.dump();
    owners.insert(job["owner"]);
    const auto events = s.event_messages(id);
    std::string all;
    for (const auto& e : events) all += e + "\n";
    EXPECT_EQ(count_prefix(events, "runner: starting on"), 1) << id << " ran other than once:\n" << all;
    EXPECT_EQ(count_prefix(events, "workers: starting the learner with 1 worker(s)"), 1) << all;
    std::ifstream trained(s.dir.path() + "/jobs/" + id + "/run/trained.jsonl");
    int rows = 0;
    for (std::string l; std::getline(trained, l);) ++rows;
    EXPECT_EQ(rows, 1) << id;
  }
  EXPECT_EQ(owners, (std::set<std::string>{"l1", "l2"})) << "one learner did all ten";
}

// The pool roles, killed one at a time in the middle of a training job: a
// worker (with its rollout child: a container's death), the controller (a
// new one carries on scheduling), the learner (restarted under its name, it
// resumes the job from its checkpoint), Redis (kill -9, restarted on its
// AOF). The job finishes, every step trained complete groups, and no
// trajectory was trained twice.
TEST(Pool, KillingAWorkerTheControllerTheLearnerAndRedisCostsNothing) {
  Stack s;
  s.controller();
  s.pool("learner", "l1");
  const pid_t w1 = s.pool("worker", "w1");
  s.pool("worker", "w2");
  const int steps = 80;
  const std::string spec = "name: pool\nenv: \"calculator:max_number=5,short_prompt=1\"\n"
                           "model: {init: " + std::string(INTERLACE_SOURCE_DIR) + "/examples/models/tiny-hybrid.json}\n"
                           "algorithm: {steps: " + std::to_string(steps) + ", groups_per_step: 2, group_size: 2}\n"
                           "rollout: {workers: 2, min_workers: 2, max_turns: 1, max_turn_tokens: 8}\n"
                           "checkpoint_every: 1\neval: {prompts: 2, samples: 0}\n";
  const std::string id = s.call(0, "POST", "/v1/jobs", {{"kind", "train"}, {"spec", spec}}).value("id", "");
  ASSERT_FALSE(id.empty());
  auto wait_step = [&](int64_t step) {
    for (int i = 0; i < 1200; ++i) {
      const json job = s.call(0, "GET", "/v1/jobs/" + id);
      const std::string state = job.value("state", "");
      if (job.value("step", int64_t{0}) >= step || state == "succeeded" || state == "failed" || state == "cancelled")
        return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return json();
  };
  json job = wait_step(2);
  ASSERT_EQ(job.value("state", ""), "running") << job.dump();
  EXPECT_EQ(job.value("workers", 0), 2) << job.dump();
  kill_group(w1, SIGKILL);
  kill_group(s.pids[0], SIGKILL);  // the controller
  s.controller_ports.clear();
  s.controller();
  // w1's entry lapses (10 s) and the new controller gives its place to a
  // spare worker started now.
  s.pool("worker", "w3");
  auto said = [&](const std::string& event) {
    for (const auto& e : s.event_messages(id))
      if (e == event) return true;
    return false;
  };
  for (int i = 0; i < 200 && !said("workers: worker w3 assigned"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(said("workers: worker w1 taken back: its heartbeat lapsed"));
  EXPECT_TRUE(said("workers: worker w3 assigned"));
  job = wait_step(job.value("step", int64_t{0}) + 2);
  ASSERT_EQ(job.value("state", ""), "running") << job.dump();
  kill_group(s.pids[1], SIGKILL);  // the learner, with its learner service
  // Restarted elsewhere (another address: a new pod's IP; any 127.x is this
  // machine's loopback): the workers follow it there.
  s.pids.push_back(start_group({INTERLACE_BIN, "serve", "learner", "--redis", s.redis_address(), "--dir",
                          s.dir.path() + "/jobs", "--name", "l1", "--poll", "0.2", "--advertise", "127.0.0.2"}));
  job = wait_step(job.value("step", int64_t{0}) + 2);
  ASSERT_EQ(job.value("state", ""), "running") << job.dump();
  s.redis.kill9();
  s.redis.start();
  ASSERT_TRUE(s.all_ended({id}, 300)) << "the job did not end within 300 s";
  job = s.call(0, "GET", "/v1/jobs/" + id);
  EXPECT_EQ(job["state"], "succeeded") << job.dump();
  std::string all;
  for (const auto& e : s.event_messages(id)) all += e + "\n";
  EXPECT_NE(all.find("runner: resuming on l1"), std::string::npos) << all;
  const std::string run = s.dir.path() + "/jobs/" + id + "/run/";
  std::ifstream trained(run + "trained.jsonl");
  std::set<std::pair<int64_t, int64_t>> ids;
  int rows = 0;
  for (std::string line; std::getline(trained, line); ++rows) {
    const json t = json::parse(line, nullptr, false);
    ASSERT_TRUE(t.is_object()) << line;
    EXPECT_EQ(t["step"], rows + 1);
    std::map<int64_t, int> per_group;
    for (const auto& sample : t["ids"]) {
      EXPECT_TRUE(ids.insert({sample[0].get<int64_t>(), sample[1].get<int64_t>()}).second) << "trained twice: " << sample;
      ++per_group[sample[0].get<int64_t>()];
    }
    EXPECT_EQ(per_group.size(), 2u) << line;
    for (auto [g, n] : per_group) EXPECT_EQ(n, 2) << "group " << g << " incomplete";
  }
  EXPECT_EQ(rows, steps);
  std::ifstream endpoints(run + "endpoints.json");
  EXPECT_EQ(json::parse(endpoints, nullptr, false).value("host", ""), "127.0.0.2");
  // The workers are idle again, back in the pool.
  bool idle = false;
  for (int i = 0; i < 100 && !idle; ++i) {
    idle = true;
    for (const json& w : s.call(0, "GET", "/v1/workers")["workers"])
      if (w["kind"] == "worker") idle = idle && w["state"] == "idle" && w["name"] != "w1";
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(idle) << s.call(0, "GET", "/v1/workers").dump();
  // A rollout job with the trained model runs on an idle worker.
  const std::string rollout =
      s.call(0, "POST", "/v1/jobs",
             {{"kind", "rollout"},
              {"spec", "from_job: " + id + "\nenv: \"calculator:max_number=5,short_prompt=1\"\nprompts: 3\n"
                       "group_size: 2\nmax_turns: 1\nmax_new_tokens: 8\n"}})
          .value("id", "");
  ASSERT_TRUE(s.all_ended({rollout}, 60));
  const json done = s.call(0, "GET", "/v1/jobs/" + rollout);
  EXPECT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_NE(done["owner"], "l1") << "a worker runs rollout jobs";
  // A train job cancelled while it runs gives its workers back within seconds.
  const std::string cancelled = s.call(0, "POST", "/v1/jobs", {{"kind", "train"}, {"spec", spec}}).value("id", "");
  for (int i = 0; i < 600 && s.call(0, "GET", "/v1/jobs/" + cancelled).value("step", 0) < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(s.call(0, "GET", "/v1/jobs/" + cancelled).value("workers", 0), 2);
  s.call(0, "POST", "/v1/jobs/" + cancelled + "/cancel");
  const auto t0 = Clock::now();
  bool freed = false;
  while (!freed && Clock::now() - t0 < std::chrono::seconds(20)) {
    const json listed = s.call(0, "GET", "/v1/workers");
    int busy = 0, idle = 0;
    for (const json& w : listed.value("workers", json::array())) busy += w["state"] == "busy", idle += w["state"] == "idle";
    freed = busy == 0 && idle == 3;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(freed) << "the learner and workers were still busy 20 s after the cancel: "
                     << s.call(0, "GET", "/v1/workers").dump();
  std::printf("cancel to idle learner and workers: %.1f s\n",
              std::chrono::duration<double>(Clock::now() - t0).count());
}

// A runner started with --health answers Kubernetes' probes: /healthz is 200
// while its heartbeats reach Redis and 503 once Redis is gone; /metrics has
// its series at 0 before any job.
TEST(Runners, HealthEndpointFollowsTheHeartbeatAndMetricsAreThereFromTheStart) {
  Stack stack;
  const int port = test::free_loopback_port();
  stack.pids.push_back(start_group({INTERLACE_BIN, "serve", "runner", "--redis", stack.redis_address(), "--dir",
                              stack.dir.path() + "/jobs", "--name", "probed", "--health",
                              "127.0.0.1:" + std::to_string(port)}));
  httplib::Client c("127.0.0.1", port);
  std::string body;
  auto health = [&] {  // the status, 0 when nothing answered
    auto r = c.Get("/healthz");
    body = r ? r->body : "";
    return r ? r->status : 0;
  };
  int status = 0;
  for (int i = 0; i < 300 && (status = health()) != 200; ++i)  // up, and its first beat
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(status, 200) << body;
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  for (const char* line : {"interlace_runner_busy 0\n", "interlace_runner_jobs_total{kind=\"train\"} 0\n",
                           "interlace_runner_jobs_total{kind=\"rollout\"} 0\n"})
    EXPECT_NE(m->body.find(line), std::string::npos) << line << " not in\n" << m->body;
  stack.redis.kill9();
  const auto until = Clock::now() + std::chrono::seconds(30);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    status = health();
  } while (status == 200 && Clock::now() < until);
  EXPECT_EQ(status, 503) << "not 503 30 s after Redis died (0: the endpoint went away)";
  EXPECT_NE(body.find("no heartbeat into Redis"), std::string::npos) << body;
}

}  // namespace
}  // namespace interlace::control
