// The fewest prompt tokens any prefix cache could have prefilled for a set of
// episodes: those (prompt, tool output and template tokens, loss_mask 0) at a
// prefix no earlier episode reached. Generated tokens count as computed:
// decoding computed them, so a cache that kept them would not prefill them
// again. Prefilled tokens over this bound is how far a cache is from ideal
// (issue 25 of this project: multi-turn rollouts prefilled 3-6x it).
#pragma once

#include <cstdint>
#include <span>

#include "interlace/rollout/agent.h"

namespace interlace::rollout {

int64_t prefill_lower_bound(std::span<const Trajectory> episodes);

}  // namespace interlace::rollout
