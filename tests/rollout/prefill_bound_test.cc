// The prefill lower bound against hand counts on small constructed workloads:
// a shared system prompt, a sampling group branching after its prompt, a
// multi-turn episode whose generated tokens count as computed.
#include "interlace/rollout/prefill_bound.h"

#include <gtest/gtest.h>

namespace interlace::rollout {
namespace {

// An episode from (tokens, generated?) runs.
Trajectory episode(std::initializer_list<std::pair<std::vector<int32_t>, bool>> runs) {
  Trajectory t;
  for (const auto& [tokens, generated] : runs)
    for (int32_t tok : tokens) {
      t.tokens.push_back(tok);
      t.loss_mask.push_back(generated ? 1 : 0);
    }
  return t;
}

const std::vector<int32_t> kSystem = {1, 2, 3, 4, 5};

TEST(PrefillLowerBound, ASharedSystemPromptCountsOnce) {
  const std::vector<Trajectory> e = {episode({{kSystem, false}, {{10, 11, 12}, false}, {{50, 51, 52, 53}, true}}),
                                     episode({{kSystem, false}, {{20, 21, 22}, false}, {{60, 61}, true}})};
  EXPECT_EQ(prefill_lower_bound(e), 5 + 3 + 3);
}

TEST(PrefillLowerBound, AGroupPrefillsItsPromptOnce) {
  const std::vector<int32_t> prompt = {7, 8, 9, 10};
  std::vector<Trajectory> group;
  for (int32_t s = 0; s < 8; ++s) group.push_back(episode({{prompt, false}, {{100 + s, 200, 201}, true}}));
  EXPECT_EQ(prefill_lower_bound(group), 4);
}

TEST(PrefillLowerBound, GeneratedTokensOfEarlierTurnsAreNotCounted) {
  // prompt (4) | answer (3, generated) | tool reply and template (2) | answer (2) | reply (1) | answer (1)
  const std::vector<Trajectory> e = {episode({{{1, 2, 3, 4}, false},
                                              {{30, 31, 32}, true},
                                              {{40, 41}, false},
                                              {{33, 34}, true},
                                              {{42}, false},
                                              {{35}, true}})};
  EXPECT_EQ(prefill_lower_bound(e), 4 + 2 + 1);
  // A sibling that answered the same first turn and got another reply:
  // only its new reply and after are new.
  std::vector<Trajectory> two = e;
  two.push_back(episode({{{1, 2, 3, 4}, false}, {{30, 31, 32}, true}, {{43, 44, 45}, false}, {{36}, true}}));
  EXPECT_EQ(prefill_lower_bound(two), 7 + 3);
  EXPECT_EQ(prefill_lower_bound({}), 0);
}

}  // namespace
}  // namespace interlace::rollout
