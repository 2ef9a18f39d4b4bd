// The worker pool's scheduling against a real redis-server: idle pool
// workers go to running jobs oldest first, up to what each wants and only if
// it can reach its minimum; assignments are taken back when a job ends,
// wants fewer, or a worker's heartbeat lapses; only the job's owner says
// what it wants; and two controllers scheduling at once never give one
// worker to two jobs.
#include "interlace/control/worker_pool.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "interlace/control/job_store.h"
#include "interlace/control/worker_registry.h"
#include "support/redis_server.h"

namespace interlace::control {
namespace {

std::unique_ptr<RedisClient> client(const test::RedisServer& server) {
  auto c = RedisClient::connect({.host = "127.0.0.1", .port = server.port()});
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

struct Fixture {
  test::RedisServer server;
  std::unique_ptr<RedisClient> redis = client(server);
  JobStore store{*redis, "t"};
  WorkerPool pool{*redis, "t"};
  WorkerRegistry registry{*redis, "t"};

  // A train job claimed by `owner` that wants `want` workers (at least `min`).
  std::string running_job(const std::string& owner, int64_t want, int64_t min) {
    Submission s;
    s.name = owner;
    s.spec = "name: x\n";
    EXPECT_TRUE(store.submit(s).ok());
    auto job = store.claim(JobKind::kTrain, owner);
    EXPECT_TRUE(job.ok() && job->has_value());
    const std::string id = (*job)->id;
    EXPECT_TRUE(pool.want_workers(id, owner, want, min).ok());
    return id;
  }
  void idle_worker(const std::string& name, int64_t ttl_ms = 60000, const std::string& kind = "worker") {
    ASSERT_TRUE(registry.heartbeat({.name = name, .kind = kind, .state = "idle"}, ttl_ms).ok());
  }
  std::vector<std::string> assigned(const std::string& id) { return *pool.assigned(id); }
  int changes() {
    auto c = pool.schedule();
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? static_cast<int>(c->size()) : -1;
  }
};

using Names = std::vector<std::string>;

TEST(WorkerPool, OldestJobFirstUpToWhatEachWantsAndBackWhenItEnds) {
  Fixture f;
  const std::string first = f.running_job("l1", 2, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // started_ms orders the jobs
  const std::string second = f.running_job("l2", 2, 1);
  for (const char* w : {"w1", "w2", "w3"}) f.idle_worker(w);
  f.idle_worker("r1", 60000, "runner");  // runners are not pool workers
  EXPECT_EQ(f.changes(), 3);
  EXPECT_EQ(f.assigned(first), (Names{"w1", "w2"}));
  EXPECT_EQ(f.assigned(second), (Names{"w3"}));
  EXPECT_EQ(*f.pool.assignment("w3"), second);
  EXPECT_EQ(*f.pool.assignment("r1"), "");
  EXPECT_EQ(f.changes(), 0) << "a second pass changed something";
  EXPECT_EQ(f.store.get(first)->workers, 2);
  EXPECT_EQ(f.store.get(first)->workers_want, 2);
  // The first job ends: its workers are released with the transition, and
  // one whose entry says idle goes to the job that still wants one (a worker
  // that still runs the old job's rollout says busy until it has stopped it).
  ASSERT_TRUE(f.registry.heartbeat({.name = "w2", .kind = "worker", .state = "busy", .job = first}, 60000).ok());
  ASSERT_TRUE(f.store.transition(first, JobState::kSucceeded, "", "l1").ok());
  EXPECT_TRUE(f.assigned(first).empty());
  EXPECT_EQ(*f.pool.assignment("w2"), "");
  EXPECT_EQ(f.store.events(first)->back().message, "2 worker(s) released: the job is succeeded");
  EXPECT_EQ(f.changes(), 1);
  EXPECT_EQ(f.assigned(second), (Names{"w1", "w3"}));
  EXPECT_EQ(f.changes(), 0);
  // Wanting fewer gives some back; wanting none gives all back.
  ASSERT_TRUE(f.pool.want_workers(second, "l2", 1, 1).ok());
  EXPECT_EQ(f.changes(), 1);
  EXPECT_EQ(f.assigned(second).size(), 1u);
  ASSERT_TRUE(f.pool.want_workers(second, "l2", 0, 0).ok());
  EXPECT_EQ(f.changes(), 1);
  EXPECT_TRUE(f.assigned(second).empty());
  auto events = f.store.events(second);
  ASSERT_TRUE(events.ok());
  int assigned = 0, back = 0;
  for (const JobEvent& e : *events) {
    assigned += e.type == "workers" && e.message.find("assigned") != std::string::npos;
    back += e.type == "workers" && e.message.find("taken back: the job wants") != std::string::npos;
  }
  EXPECT_EQ(assigned, 2);
  EXPECT_EQ(back, 2);
}

TEST(WorkerPool, AJobGetsWorkersOnlyIfItCanReachItsMinimum) {
  Fixture f;
  const std::string big = f.running_job("l1", 3, 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const std::string small = f.running_job("l2", 1, 1);
  f.idle_worker("w1");
  f.idle_worker("w2");
  EXPECT_EQ(f.changes(), 1);
  EXPECT_TRUE(f.assigned(big).empty()) << "two workers given to a job that needs three to start";
  EXPECT_EQ(f.assigned(small), (Names{"w1"}));
  ASSERT_TRUE(f.store.transition(small, JobState::kCancelled, "user").ok());
  f.changes();  // takes w1 back
  f.idle_worker("w3");
  EXPECT_EQ(f.changes(), 3);
  EXPECT_EQ(f.assigned(big), (Names{"w1", "w2", "w3"}));
}

TEST(WorkerPool, ALapsedWorkerIsReplacedByAnIdleOne) {
  Fixture f;
  const std::string id = f.running_job("l1", 1, 1);
  f.idle_worker("w1", 300);
  EXPECT_EQ(f.changes(), 1);
  EXPECT_EQ(f.assigned(id), (Names{"w1"}));
  f.idle_worker("w2");
  EXPECT_EQ(f.changes(), 0) << "a job got more than it wants";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // w1 stops beating: killed
  EXPECT_EQ(f.changes(), 2);
  EXPECT_EQ(f.assigned(id), (Names{"w2"}));
  EXPECT_EQ(*f.pool.assignment("w1"), "");
  auto events = f.store.events(id);
  ASSERT_TRUE(events.ok());
  bool said = false;
  for (const JobEvent& e : *events) said = said || e.message == "worker w1 taken back: its heartbeat lapsed";
  EXPECT_TRUE(said);
}

TEST(WorkerPool, OnlyTheOwnerOfARunningJobSaysWhatItWants) {
  Fixture f;
  const std::string id = f.running_job("l1", 1, 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(f.pool.want_workers(id, "someone-else", 2, 1)));
  EXPECT_TRUE(absl::IsFailedPrecondition(f.pool.want_workers("job-99", "l1", 2, 1)));
  EXPECT_TRUE(absl::IsInvalidArgument(f.pool.want_workers(id, "l1", 1, 2)));
  ASSERT_TRUE(f.store.transition(id, JobState::kSucceeded, "", "l1").ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(f.pool.want_workers(id, "l1", 1, 1)));
}

// Idle workers left after the running train jobs are served take queued
// rollout jobs, one each, oldest first (the job is claimed for the worker);
// a rollout job whose worker's heartbeat lapsed is queued again.
TEST(WorkerPool, IdleWorkersLeftOverTakeRolloutJobsOneEach) {
  Fixture f;
  const std::string train = f.running_job("l1", 1, 1);
  std::vector<std::string> rollouts;
  for (int i = 0; i < 3; ++i) {
    Submission s;
    s.kind = JobKind::kRollout;
    s.name = "r" + std::to_string(i);
    s.spec = "prompts: 1\n";
    rollouts.push_back(*f.store.submit(s));
  }
  f.idle_worker("w1");
  f.idle_worker("w2", 300);
  f.idle_worker("w3");
  EXPECT_EQ(f.changes(), 3);
  EXPECT_EQ(f.assigned(train), (Names{"w1"}));
  EXPECT_EQ(*f.pool.assignment("w2"), rollouts[0]);
  EXPECT_EQ(*f.pool.assignment("w3"), rollouts[1]);
  auto r0 = f.store.get(rollouts[0]);
  EXPECT_EQ(r0->state, JobState::kRunning);
  EXPECT_EQ(r0->owner, "w2");
  EXPECT_EQ(f.store.get(rollouts[2])->state, JobState::kQueued);
  EXPECT_EQ(f.changes(), 0) << "a rollout job's worker was taken back at once";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // w2 dies
  EXPECT_EQ(f.changes(), 1);
  EXPECT_EQ(f.store.get(rollouts[0])->state, JobState::kQueued);
  EXPECT_EQ(*f.store.queue(JobKind::kRollout), (Names{rollouts[0], rollouts[2]})) << "it goes back to the front";
  // w3 finishes its job (released with the transition) and, idle again, takes
  // the requeued one.
  ASSERT_TRUE(f.store.transition(rollouts[1], JobState::kSucceeded, "", "w3").ok());
  EXPECT_EQ(*f.pool.assignment("w3"), "");
  EXPECT_EQ(f.changes(), 1);
  EXPECT_EQ(*f.pool.assignment("w3"), rollouts[0]);
}

// Two controllers' passes at once, with workers coming and going: at every
// point each worker is in at most one job's set, and its assignment key
// names that job.
TEST(WorkerPool, ConcurrentPassesNeverGiveAWorkerToTwoJobs) {
  Fixture f;
  std::vector<std::string> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(f.running_job("l" + std::to_string(i), 3, 1));
  std::atomic<bool> done{false};
  std::vector<std::thread> schedulers;
  for (int i = 0; i < 2; ++i)
    schedulers.emplace_back([&] {
      auto redis = client(f.server);
      WorkerPool pool(*redis, "t");
      while (!done) EXPECT_TRUE(pool.schedule().ok());
    });
  for (int round = 0; round < 20; ++round) {
    for (int w = 0; w < 8; ++w) f.idle_worker("w" + std::to_string(w), (w + round) % 3 == 0 ? 50 : 60000);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::map<std::string, std::string> owner;
    for (const std::string& id : jobs)
      for (const std::string& w : f.assigned(id)) {
        EXPECT_TRUE(owner.emplace(w, id).second) << w << " is in " << owner[w] << " and " << id;
      }
    for (const auto& [w, id] : owner) {
      const std::string a = *f.pool.assignment(w);
      EXPECT_TRUE(a == id || a.empty()) << w << " assigned to " << a << " but in " << id << "'s set";
    }
  }
  done = true;
  for (auto& t : schedulers) t.join();
}

}  // namespace
}  // namespace interlace::control
