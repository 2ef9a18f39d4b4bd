// The gateway's routing index and how it follows a worker's cache events:
// matches come from the hashes the cache announces (checked against a
// brute-force scan of what was stored), only the newest version counts,
// in-flight prompts count until they end; the feed applies changes in order
// and, after a gap, a restart or a bad message, trusts nothing until a snapshot.
#include <gtest/gtest.h>

#include <random>

#include "interlace/cache/prefix_hash.h"
#include "interlace/serving/cache_feed.h"
#include "interlace/serving/prefix_index.h"

namespace interlace::serving {
namespace {

cache::UsablePrefix prefix_of(const std::vector<int32_t>& tokens, size_t length, int64_t version = 0) {
  return {cache::prefix_hash(std::span(tokens).first(length)), int64_t(length), version};
}

TEST(PrefixIndex, MatchesTheLongestStoredPrefixOfEachWorker) {
  std::mt19937 rng(std::random_device{}());
  const size_t workers = 3;
  PrefixIndex index(workers);
  // Prompts that share stems, as conversations and sampling groups do.
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 40; ++i) {
    std::vector<int32_t> p = i > 0 && rng() % 2 ? prompts[rng() % prompts.size()] : std::vector<int32_t>{};
    for (size_t k = 0, n = 1 + rng() % 30; k < n; ++k) p.push_back(int32_t(rng() % 5));  // a small alphabet: many shared prefixes
    prompts.push_back(p);
  }
  // Held: (worker, the tokens of a stored prefix); some stored then dropped.
  std::vector<std::pair<size_t, std::vector<int32_t>>> held;
  for (int i = 0; i < 200; ++i) {
    const auto& p = prompts[rng() % prompts.size()];
    const size_t w = rng() % workers, length = 1 + rng() % p.size();
    const std::vector<int32_t> t(p.begin(), p.begin() + long(length));
    ASSERT_TRUE(index.apply(w, prefix_of(t, length), true));
    if (rng() % 4 == 0) {
      index.apply(w, prefix_of(t, length), false);
      std::erase_if(held, [&](const auto& h) { return h.first == w && h.second == t; });
    } else {
      held.emplace_back(w, t);
    }
  }
  for (const auto& p : prompts) {
    std::vector<int64_t> expect(workers, 0);
    for (const auto& [w, t] : held)
      if (t.size() <= p.size() && std::equal(t.begin(), t.end(), p.begin())) expect[w] = std::max(expect[w], int64_t(t.size()));
    EXPECT_EQ(index.match(p), expect);
  }
}

TEST(PrefixIndex, OnlyTheNewestVersionAndInFlightPromptsCount) {
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  PrefixIndex index(2);
  index.apply(0, prefix_of(prompt, 4, /*version=*/1), true);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{4, 0}));
  index.apply(0, prefix_of(prompt, 2, 2), true);  // the worker now runs version 2: version 1's tree serves nothing new
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(index.entries(), 2u);
  // A request begun under version 1 stores late (or a snapshot lists the old tree last): version 2 still counts.
  index.apply(0, prefix_of(prompt, 5, 1), true);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{2, 0}));
  index.apply(0, prefix_of(prompt, 5, 1), false);
  index.add_in_flight(1, prompt);
  index.add_in_flight(1, prompt);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{2, 6}));
  index.remove_in_flight(1, prompt);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{2, 6})) << "one of two requests with that prompt is still in flight";
  index.remove_in_flight(1, prompt);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{2, 0}));
  index.clear_worker(0);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(index.entries(), 0u);
}

// The weights went back (a learner restarted from a checkpoint): the worker's
// cache drops everything, and what it stores next, under a lower version, counts.
TEST(PrefixIndex, AVersionGoingBackCountsOnceTheOldEntriesAreGone) {
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  PrefixIndex index(1);
  index.apply(0, prefix_of(prompt, 4, 7), true);
  index.apply(0, prefix_of(prompt, 4, 7), false);
  index.apply(0, prefix_of(prompt, 3, 2), true);
  EXPECT_EQ(index.match(prompt), (std::vector<int64_t>{3}));
}

TEST(PrefixIndex, AWorkersShareIsCapped) {
  PrefixIndex index(2, /*max_entries_per_worker=*/3);
  const std::vector<int32_t> t = {1, 2, 3, 4, 5};
  for (size_t n = 1; n <= 3; ++n) EXPECT_TRUE(index.apply(0, prefix_of(t, n), true));
  EXPECT_FALSE(index.apply(0, prefix_of(t, 4), true));
  EXPECT_TRUE(index.apply(1, prefix_of(t, 4), true)) << "another worker's share is its own";
  EXPECT_TRUE(index.apply(0, prefix_of(t, 3), true)) << "a store already held costs nothing";
  EXPECT_EQ(index.match(t), (std::vector<int64_t>{3, 4}));
}

TEST(CacheFeed, AppliesInOrderAndResyncsAfterAGapARestartOrABadMessage) {
  CacheFeed feed;
  const auto now = CacheFeed::Clock::now();
  EXPECT_FALSE(feed.should_ask(now, std::chrono::milliseconds(500))) << "nothing to follow before a hello";
  feed.hello(7);
  EXPECT_TRUE(feed.should_ask(now, std::chrono::milliseconds(500)));
  feed.asked(now);
  EXPECT_FALSE(feed.should_ask(now + std::chrono::milliseconds(100), std::chrono::milliseconds(500)));
  EXPECT_TRUE(feed.should_ask(now + std::chrono::milliseconds(600), std::chrono::milliseconds(500))) << "no snapshot came: ask again";
  EXPECT_FALSE(feed.on_message(7, 3, false).apply) << "a change before the snapshot is in it";
  auto d = feed.on_message(7, 4, true);  // the snapshot, as of change 4
  EXPECT_TRUE(d.clear && d.apply && feed.synced());
  EXPECT_FALSE(feed.on_message(7, 4, false).apply) << "already in the snapshot";
  d = feed.on_message(7, 5, false);
  EXPECT_TRUE(d.apply && !d.clear);
  // Changes 6 and 7 lost: the index is no longer whole.
  d = feed.on_message(7, 8, false);
  EXPECT_TRUE(d.clear && !d.apply);
  EXPECT_EQ(d.lost, 2);
  EXPECT_FALSE(feed.synced());
  EXPECT_TRUE(feed.should_ask(now + std::chrono::milliseconds(1), std::chrono::milliseconds(500))) << "a gap asks at once";
  EXPECT_FALSE(feed.on_message(7, 9, false).apply);
  EXPECT_TRUE(feed.on_message(7, 9, true).apply);
  // The worker restarted (another instance): its cache is empty, ours must be too.
  d = feed.on_message(8, 1, false);
  EXPECT_TRUE(d.clear && !d.apply);
  EXPECT_TRUE(feed.on_message(8, 1, true).apply);
  d = feed.on_malformed();
  EXPECT_TRUE(d.clear && !feed.synced());
}

}  // namespace
}  // namespace interlace::serving
