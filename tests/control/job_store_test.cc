// The job store against a real redis-server (started by the test on a
// loopback port of its own): the state machine and its refusals, FIFO claims,
// exactly-once claims by concurrent learners, cancellation of queued jobs,
// idempotent resubmission, bounded input, event streams, and what survives a
// kill -9 of Redis (its AOF) with clients that reconnect by themselves.
#include "interlace/control/job_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "interlace/control/worker_registry.h"
#include "support/redis_server.h"

namespace interlace::control {
namespace {

std::unique_ptr<RedisClient> client(const test::RedisServer& server, RedisOptions options = {}) {
  auto c = RedisClient::connect({.host = "127.0.0.1", .port = server.port()}, options);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

Submission submission(JobKind kind, const std::string& name, const std::string& spec) {
  Submission s;
  s.kind = kind;
  s.name = name;
  s.spec = spec;
  return s;
}
Submission train(const std::string& name) { return submission(JobKind::kTrain, name, "name: " + name + "\n"); }

// The id of the job a claim took, "" when none was queued.
std::string claim_id(JobStore& store, JobKind kind, const std::string& owner) {
  auto job = store.claim(kind, owner);
  EXPECT_TRUE(job.ok()) << job.status();
  return job.ok() && job->has_value() ? (*job)->id : "";
}

TEST(JobStore, SubmitClaimFinishWithTimestampsAndEvents) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  auto id = store.submit(train("first"));
  ASSERT_TRUE(id.ok()) << id.status();
  auto queued = store.get(*id);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->state, JobState::kQueued);
  EXPECT_EQ(queued->name, "first");
  EXPECT_EQ(queued->spec, "name: first\n");
  EXPECT_GT(queued->created_ms, 1'600'000'000'000);
  EXPECT_EQ(queued->started_ms, 0);

  auto claimed = store.claim(JobKind::kTrain, "learner-a");
  ASSERT_TRUE(claimed.ok() && claimed->has_value()) << claimed.status();
  EXPECT_EQ((*claimed)->id, *id);
  EXPECT_EQ((*claimed)->state, JobState::kRunning);
  EXPECT_EQ((*claimed)->owner, "learner-a");
  EXPECT_GE((*claimed)->started_ms, queued->created_ms);
  auto none = store.claim(JobKind::kTrain, "learner-b");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value()) << "one job, claimed twice";

  ASSERT_TRUE(store.append_event(*id, "log", "step 1 reward 0.5").ok());
  auto done = store.transition(*id, JobState::kSucceeded, "", "learner-a");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state, JobState::kSucceeded);
  EXPECT_GE(done->finished_ms, done->started_ms);

  auto events = store.events(*id);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<std::string> messages;
  for (const auto& e : *events) messages.push_back(e.message);
  EXPECT_EQ(messages, (std::vector<std::string>{"queued", "running (learner-a)", "step 1 reward 0.5", "succeeded"}));
  // Following from an event id returns only what came after it.
  auto after = store.events(*id, (*events)[1].id);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].message, "step 1 reward 0.5");
}

TEST(JobStore, IllegalTransitionsAndUnknownJobsAreRefusedWithTheReason) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  const std::string id = *store.submit(train("x"));
  auto early = store.transition(id, JobState::kSucceeded, "");
  EXPECT_TRUE(absl::IsFailedPrecondition(early.status())) << early.status();
  EXPECT_NE(early.status().message().find("is queued: it cannot become succeeded"), std::string::npos) << early.status();
  ASSERT_TRUE(store.claim(JobKind::kTrain, "a").ok());
  auto stranger = store.transition(id, JobState::kFailed, "", "b");
  EXPECT_TRUE(absl::IsFailedPrecondition(stranger.status())) << "a learner that does not hold the job finished it";
  ASSERT_TRUE(store.transition(id, JobState::kFailed, "diverged", "a").ok());
  auto again = store.transition(id, JobState::kCancelled, "");
  EXPECT_TRUE(absl::IsFailedPrecondition(again.status())) << "a finished job changed state";
  EXPECT_EQ(store.get(id)->reason, "diverged");
  EXPECT_TRUE(absl::IsNotFound(store.get("job-999").status()));
  EXPECT_TRUE(absl::IsNotFound(store.transition("job-999", JobState::kCancelled, "").status()));
  EXPECT_TRUE(absl::IsNotFound(store.append_event("job-999", "log", "x")));
  EXPECT_TRUE(absl::IsInvalidArgument(store.transition(id, JobState::kRunning, "").status()));
}

TEST(JobStore, BadSubmissionsStoreNothing) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  EXPECT_TRUE(absl::IsInvalidArgument(store.submit(submission(JobKind::kTrain, "", "")).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.submit(submission(JobKind::kTrain, "", std::string(kMaxSpecBytes + 1, 'x'))).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.submit(submission(JobKind::kTrain, std::string(200, 'n'), "a: 1")).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.append_event(*store.submit(train("ok")), "log", std::string(kMaxEventBytes + 1, 'x'))));
  auto jobs = store.list();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->size(), 1u) << "only the valid submission is stored";
}

TEST(JobStore, ClaimsAreFifoPerKindAndSkipCancelledJobs) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  const std::string a = *store.submit(train("a"));
  const std::string r = *store.submit(submission(JobKind::kRollout, "r", "env: calculator"));
  const std::string b = *store.submit(train("b"));
  const std::string c = *store.submit(train("c"));
  ASSERT_TRUE(store.transition(b, JobState::kCancelled, "not needed").ok());
  EXPECT_EQ(*store.queue(JobKind::kTrain), (std::vector<std::string>{a, c}));
  EXPECT_EQ(claim_id(store, JobKind::kTrain, "l"), a);
  EXPECT_EQ(claim_id(store, JobKind::kTrain, "l"), c) << "a cancelled job was claimed";
  EXPECT_EQ(claim_id(store, JobKind::kTrain, "l"), "");
  EXPECT_EQ(claim_id(store, JobKind::kRollout, "w"), r);
  auto jobs = *store.list();
  ASSERT_EQ(jobs.size(), 4u);
  EXPECT_EQ(jobs.front().id, c) << "newest first";
}

TEST(JobStore, AResubmissionWithTheSameRequestIdIsTheSameJob) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  Submission s = train("once");
  s.request_id = "req-42";
  const std::string first = *store.submit(s);
  EXPECT_EQ(*store.submit(s), first);
  EXPECT_EQ(store.list()->size(), 1u);
}

// Ten jobs, four learners each with its own connection claiming as fast as it
// can: every job is claimed exactly once.
TEST(JobStore, ConcurrentLearnersClaimEachJobExactlyOnce) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  std::set<std::string> submitted;
  for (int i = 0; i < 10; ++i) submitted.insert(*store.submit(train("j" + std::to_string(i))));
  std::vector<std::vector<std::string>> got(4);
  std::vector<std::thread> learners;
  for (int l = 0; l < 4; ++l)
    learners.emplace_back([&, l] {
      auto mine = RedisClient::connect({.host = "127.0.0.1", .port = server.port()});
      if (!mine.ok()) return;
      JobStore s(**mine, "t");
      for (;;) {
        auto job = s.claim(JobKind::kTrain, "learner-" + std::to_string(l));
        if (!job.ok() || !job->has_value()) return;
        got[l].push_back((*job)->id);
      }
    });
  for (auto& t : learners) t.join();
  std::multiset<std::string> claimed;
  for (const auto& g : got) claimed.insert(g.begin(), g.end());
  EXPECT_EQ(claimed.size(), submitted.size()) << "a job claimed twice or not at all";
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()), submitted);
  auto jobs = store.list();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  for (const auto& job : *jobs) EXPECT_EQ(job.state, JobState::kRunning) << job.id;
}

// What Redis acknowledged survives a kill -9 (AOF, fsync always), and a client
// made before the restart reconnects by itself and carries on.
TEST(JobStore, AcknowledgedSubmissionsSurviveAKillOfRedisAndClientsReconnect) {
  test::RedisServer server;
  RedisOptions options;
  options.reconnect_for = std::chrono::milliseconds(10000);
  auto redis = client(server, options);
  JobStore store(*redis, "t");
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(*store.submit(train("s" + std::to_string(i))));
  ASSERT_TRUE(store.claim(JobKind::kTrain, "l")->has_value());
  server.kill9();
  std::thread restart([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    server.start();
  });
  auto jobs = store.list();  // blocks, reconnecting, until the server is back
  restart.join();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->size(), ids.size());
  EXPECT_GE(redis->reconnects(), 1);
  EXPECT_EQ(store.get(ids[0])->state, JobState::kRunning);
  EXPECT_EQ(store.queue(JobKind::kTrain)->size(), ids.size() - 1);
  // The scripts are gone from the restarted server's cache: loaded again.
  EXPECT_EQ(claim_id(store, JobKind::kTrain, "l"), ids[1]);
}

TEST(RedisClient, NoServerIsAClearErrorAndAddressesAreChecked) {
  const int port = test::free_loopback_port();
  auto c = RedisClient::connect({.host = "127.0.0.1", .port = port});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::IsUnavailable(c.status()));
  EXPECT_NE(c.status().message().find("no Redis at 127.0.0.1:" + std::to_string(port)), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("redis-server"), std::string::npos) << "says how to start one";
  EXPECT_EQ(parse_redis_address("redis://10.0.0.1:6380")->port, 6380);
  EXPECT_EQ(parse_redis_address("localhost:1")->host, "localhost");
  EXPECT_FALSE(parse_redis_address("localhost").ok());
  EXPECT_FALSE(parse_redis_address("h:99999").ok());
  EXPECT_FALSE(parse_redis_address("h:12x").ok());
}

// A running job's progress is reported by its owner only, and read back;
// finishing it records the results file.
TEST(JobStore, ProgressComesFromTheOwnerAndResultsWithTheEnd) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  auto id = store.submit(train("p"));
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store.set_progress(*id, "a", 1, 0.5))) << "queued: nobody's progress";
  ASSERT_EQ(claim_id(store, JobKind::kTrain, "a"), *id);
  EXPECT_TRUE(absl::IsFailedPrecondition(store.set_progress(*id, "b", 3, 0.5))) << "b does not hold it";
  ASSERT_TRUE(store.set_progress(*id, "a", 7, 0.625, {{"tokens_per_second", 812.5}, {"bad", NAN}}).ok());
  EXPECT_EQ(store.get(*id)->stats, (std::map<std::string, double>{{"tokens_per_second", 812.5}}))
      << "a non-finite figure is left out, the rest kept";
  auto job = store.get(*id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->step, 7);
  EXPECT_DOUBLE_EQ(job->reward, 0.625);
  EXPECT_TRUE(std::isnan(JobRecord{}.reward)) << "no reward before any report";
  auto done = store.transition(*id, JobState::kSucceeded, "", "a", "/jobs/" + *id + "/final-model.tar");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->results, "/jobs/" + *id + "/final-model.tar");
  EXPECT_TRUE(absl::IsFailedPrecondition(store.set_progress(*id, "a", 8, 0.7))) << "finished: no more progress";
}

// Runners heartbeat into the registry; an entry not renewed lapses by
// itself (a kill -9 needs no cleanup), and leave() removes one at once.
TEST(WorkerRegistry, EntriesLiveWhileRenewedAndLapseWithoutIt) {
  test::RedisServer server;
  auto redis = client(server);
  WorkerRegistry registry(*redis, "t");
  ASSERT_TRUE(registry.heartbeat({.name = "r1", .host = "h", .pid = 11, .state = "busy", .job = "job-3"}, 60000).ok());
  ASSERT_TRUE(registry.heartbeat({.name = "r2", .host = "h", .pid = 12}, 300).ok());
  auto both = registry.list();
  ASSERT_TRUE(both.ok());
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ((*both)[0].name, "r1");
  EXPECT_EQ((*both)[0].job, "job-3");
  EXPECT_EQ((*both)[0].state, "busy");
  EXPECT_EQ((*both)[1].pid, 12);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  auto one = registry.list();
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u) << "r2's entry outlived its TTL";
  EXPECT_EQ((*one)[0].name, "r1");
  auto members = redis->command({"SMEMBERS", "t:workers"});
  ASSERT_TRUE(members.ok());
  EXPECT_EQ(members->elements.size(), 1u) << "a lapsed name stays in the set";
  ASSERT_TRUE(registry.leave("r1").ok());
  EXPECT_TRUE(registry.list()->empty());
  EXPECT_FALSE(registry.heartbeat({.name = ""}, 1000).ok());
}

// A running job whose owner's registry entry lapsed goes back to the front
// of its queue (once); one whose owner still heartbeats stays where it is.
TEST(JobStore, JobsOfRunnersThatStoppedHeartbeatingAreQueuedAgain) {
  test::RedisServer server;
  auto redis = client(server);
  JobStore store(*redis, "t");
  WorkerRegistry registry(*redis, "t");
  const std::string a = *store.submit(train("a")), b = *store.submit(train("b")), c = *store.submit(train("c"));
  ASSERT_EQ(claim_id(store, JobKind::kTrain, "dead"), a);
  ASSERT_EQ(claim_id(store, JobKind::kTrain, "alive"), b);
  ASSERT_TRUE(registry.heartbeat({.name = "alive"}, 60000).ok());
  auto requeued = store.requeue_orphans();
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  EXPECT_EQ(*requeued, std::vector<std::string>{a});
  EXPECT_TRUE(store.requeue_orphans()->empty()) << "requeued twice";
  EXPECT_EQ(store.get(a)->state, JobState::kQueued);
  EXPECT_EQ(store.get(a)->owner, "");
  EXPECT_EQ(store.get(b)->state, JobState::kRunning);
  EXPECT_EQ(*store.queue(JobKind::kTrain), (std::vector<std::string>{a, c})) << "it goes before jobs never started";
  auto events = store.events(a);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->back().message, "queued again: its runner dead stopped heartbeating");
  // The dead runner, back, cannot finish what it lost; the new owner can.
  EXPECT_TRUE(absl::IsFailedPrecondition(store.transition(a, JobState::kSucceeded, "", "dead").status()));
  ASSERT_EQ(claim_id(store, JobKind::kTrain, "other"), a);
  EXPECT_TRUE(store.transition(a, JobState::kSucceeded, "", "other").ok());
}

}  // namespace
}  // namespace interlace::control
