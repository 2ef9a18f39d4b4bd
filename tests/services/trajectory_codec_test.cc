// Trajectory frames: round trip, and every kind of bad frame (garbage,
// truncated, oversized, inconsistent, randomly corrupted) rejected with a
// message and without a crash.
#include "interlace/transport/trajectory_codec.h"

#include <capnp/any.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <random>

#include "interlace/transport/messages.h"
#include "proto/trajectory.capnp.h"
#include "support/random.h"

namespace interlace::transport {
namespace {

TrajectoryMessage sample_message(std::mt19937_64& rng) {
  TrajectoryMessage m;
  m.job = "calc-job";
  m.env = "calculator";
  m.worker = "worker-0";
  m.attempt = 2;
  rollout::Trajectory& t = m.trajectory;
  t.task_seed = rng();
  t.group = 41;
  t.sample = 3;
  const int n = 200;
  for (int i = 0; i < n; ++i) {
    const bool gen = i >= 120 && i % 7 != 0;
    t.tokens.push_back(static_cast<int32_t>(rng() % 272));
    t.loss_mask.push_back(gen ? 1 : 0);
    t.logprobs.push_back(gen ? -float(rng() % 1000) / 100.0f : NAN);
    t.sampled_logprobs.push_back(gen ? -float(rng() % 1000) / 300.0f : NAN);
    t.versions.push_back(gen ? 5 + i % 2 : -1);
  }
  t.turns = {{"system", 0, 50}, {"user", 50, 117}, {"assistant", 117, 200}};
  t.reward = 0.75;
  t.finish_reason = "done";
  t.cached_tokens = 117;
  return m;
}

bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

TEST(TrajectoryCodec, RoundTrip) {
  std::mt19937_64 rng(testing::fresh_seed());
  const TrajectoryMessage m = sample_message(rng);
  const std::string frame = encode_trajectory(m);
  auto d = decode_trajectory(frame);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->job, m.job);
  EXPECT_EQ(d->env, m.env);
  EXPECT_EQ(d->worker, m.worker);
  EXPECT_EQ(d->attempt, m.attempt);
  const auto &a = d->trajectory, &b = m.trajectory;
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.loss_mask, b.loss_mask);
  EXPECT_EQ(a.versions, b.versions);
  for (size_t i = 0; i < b.tokens.size(); ++i) {
    EXPECT_TRUE(same_float(a.logprobs[i], b.logprobs[i])) << i;
    EXPECT_TRUE(same_float(a.sampled_logprobs[i], b.sampled_logprobs[i])) << i;
  }
  ASSERT_EQ(a.turns.size(), b.turns.size());
  for (size_t i = 0; i < b.turns.size(); ++i) {
    EXPECT_EQ(a.turns[i].role, b.turns[i].role);
    EXPECT_EQ(a.turns[i].start, b.turns[i].start);
    EXPECT_EQ(a.turns[i].end, b.turns[i].end);
  }
  EXPECT_EQ(a.task_seed, b.task_seed);
  EXPECT_EQ(a.group, b.group);
  EXPECT_EQ(a.sample, b.sample);
  EXPECT_EQ(a.reward, b.reward);
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.cached_tokens, b.cached_tokens);
  EXPECT_EQ(trajectory_key(*d), "calc-job/41/3/2");
  // Unaligned bytes decode too (copied into aligned words).
  std::string shifted = " " + frame;
  EXPECT_TRUE(decode_trajectory(std::string_view(shifted).substr(1)).ok());
}

TEST(TrajectoryCodec, EmptyTrajectoryRoundTrips) {
  TrajectoryMessage m;
  m.job = "j";
  auto d = decode_trajectory(encode_trajectory(m));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->trajectory.tokens.empty());
  EXPECT_TRUE(d->trajectory.versions.empty());
}

// Cap'n Proto lets another writer send a List(Int32) as a list of structs
// whose first field is the value (schema evolution). The decoder's bulk copy
// must not take those bytes for int32s: it reads such lists element by element.
TEST(TrajectoryCodec, ListsInAWiderLayoutAreReadElementByElement) {
  std::mt19937_64 rng(testing::fresh_seed());
  const TrajectoryMessage m = sample_message(rng);
  const std::string frame = encode_trajectory(m);
  capnp::FlatArrayMessageReader reader(
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(frame.data()), frame.size() / sizeof(capnp::word)));
  capnp::MallocMessageBuilder builder;
  builder.setRoot(reader.getRoot<proto::Trajectory>());
  const uint32_t slot = capnp::Schema::from<proto::Trajectory>().getFieldByName("tokens").getProto().getSlot().getOffset();
  auto pointers = capnp::AnyStruct::Builder(builder.getRoot<proto::Trajectory>()).getPointerSection();
  const auto& tokens = m.trajectory.tokens;
  auto wide = pointers[slot].initAsListOfAnyStruct(1, 0, static_cast<unsigned>(tokens.size()));  // one word each
  for (unsigned i = 0; i < tokens.size(); ++i) std::memcpy(wide[i].getDataSection().begin(), &tokens[i], sizeof(int32_t));
  const std::string widened = flat_frame(builder);
  ASSERT_GT(widened.size(), frame.size());
  auto d = decode_trajectory(widened);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->trajectory.tokens, tokens);
  EXPECT_EQ(d->trajectory.versions, m.trajectory.versions);
}

TEST(TrajectoryCodec, BadFramesAreRejectedWithAReason) {
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string frame = encode_trajectory(sample_message(rng));
  auto error = [](std::string_view f, const FrameLimits& l = {}) {
    auto d = decode_trajectory(f, l);
    return d.ok() ? std::string("ok") : std::string(d.status().message());
  };
  EXPECT_NE(error("").find("8-byte words"), std::string::npos);
  EXPECT_NE(error(std::string_view(frame).substr(0, frame.size() - 3)).find("truncated"), std::string::npos);
  EXPECT_NE(error(std::string_view(frame).substr(0, frame.size() - 64)).find("malformed"), std::string::npos);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  EXPECT_NE(error(garbage), "ok");
  EXPECT_NE(error(frame, {.max_bytes = 1024}).find("over the 1024-byte limit"), std::string::npos);
  EXPECT_NE(error(frame, {.traversal_words = 16}).find("malformed"), std::string::npos);
  // Well-formed Cap'n Proto, inconsistent trajectory.
  TrajectoryMessage bad = sample_message(rng);
  bad.trajectory.versions.pop_back();
  EXPECT_NE(error(encode_trajectory(bad)).find("differ in length"), std::string::npos);
  bad = sample_message(rng);
  bad.trajectory.turns.push_back({"tool", 150, 999});
  EXPECT_NE(error(encode_trajectory(bad)).find("outside"), std::string::npos);
  bad = sample_message(rng);
  bad.trajectory.logprobs[150] = NAN;
  EXPECT_NE(error(encode_trajectory(bad)).find("no finite log-prob"), std::string::npos);
}

// Random corruption of a valid frame: every outcome is ok or an error, never a crash.
TEST(TrajectoryCodec, CorruptedFramesNeverCrash) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string frame = encode_trajectory(sample_message(rng));
  int rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string f = frame;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) f[rng() % f.size()] = static_cast<char>(rng());
    rejected += !decode_trajectory(f).ok();
  }
  std::fprintf(stderr, "%d of 2000 corrupted frames rejected, the rest decoded consistently\n", rejected);
  EXPECT_GT(rejected, 0);
}

}  // namespace
// Inputs the fuzzers found (fuzz/): a few hundred bytes that Cap'n Proto
// reads as millions of list elements (a list of empty structs is charged one
// word each against the traversal limit). The trajectory frame once decoded
// into millions of turns (100 MB re-encoded), the task grant into 16M tasks
// (2 GiB). Both are refused now: a reader may traverse a few times its frame.
TEST(TrajectoryCodec, AmplifyingFramesFoundByFuzzingAreRefused) {
  auto read = [](const std::string& name) {
    std::ifstream in(std::string(INTERLACE_SOURCE_DIR) + "/tests/services/data/" + name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string trajectory = read("amplified_turns.trajectory");
  ASSERT_FALSE(trajectory.empty());
  auto t = decode_trajectory(trajectory, {.max_bytes = size_t{16} << 20});
  ASSERT_FALSE(t.ok()) << t->trajectory.turns.size() << " turns from " << trajectory.size() << " bytes";
  EXPECT_NE(std::string(t.status().message()).find("traversal limit"), std::string::npos) << t.status();
  const std::string grant = read("amplified_tasks.message");
  ASSERT_FALSE(grant.empty());
  auto g = decode_task_grant(std::string_view(grant).substr(1), {.max_bytes = size_t{64} << 10});  // byte 0 picked the decoder
  ASSERT_FALSE(g.ok()) << g->tasks.size() << " tasks from " << grant.size() << " bytes";
  EXPECT_NE(std::string(g.status().message()).find("traversal limit"), std::string::npos) << g.status();
}

}  // namespace interlace::transport
