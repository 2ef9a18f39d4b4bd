#include "interlace/rl/trajectory_check.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace interlace::rl {

absl::Status check_trajectory(const rollout::Trajectory& t, const TrajectoryLimits& l) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (t.sample < 0 || t.sample >= l.group_size) return bad("sample ", t.sample, " is outside the group size ", l.group_size);
  const int64_t n = static_cast<int64_t>(t.tokens.size());
  if (n < 2) return bad("tokens: ", n, " token(s); a trajectory needs a prompt and at least one generated token");
  if (n > l.max_tokens) return bad("tokens: ", n, " tokens, over the job's max_episode_tokens ", l.max_tokens);
  for (const auto& [name, size] : {std::pair<const char*, size_t>{"loss_mask", t.loss_mask.size()},
                                   {"logprobs", t.logprobs.size()},
                                   {"sampled_logprobs", t.sampled_logprobs.size()},
                                   {"versions", t.versions.size()}})
    if (static_cast<int64_t>(size) != n) return bad(name, " has ", size, " entries, tokens ", n);
  for (int64_t i = 0; i < n; ++i)
    if (t.tokens[i] < 0 || t.tokens[i] >= l.vocab_size)
      return bad("tokens[", i, "] = ", t.tokens[i], " is outside the vocabulary [0, ", l.vocab_size, ")");
  if (t.loss_mask[0]) return bad("loss_mask[0] is set: the first token has nothing before it to be predicted from");
  const std::vector<float>& lp = l.sampled_logprobs ? t.sampled_logprobs : t.logprobs;
  const char* lp_name = l.sampled_logprobs ? "sampled_logprobs" : "logprobs";
  int64_t trained = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (t.loss_mask[i] > 1) return bad("loss_mask[", i, "] = ", int(t.loss_mask[i]), "; expected 0 or 1");
    if (!t.loss_mask[i]) continue;
    ++trained;
    // A log-probability is at most 0; a little above is rounding.
    if (!std::isfinite(lp[i]) || lp[i] > 1e-3f)
      return bad(lp_name, "[", i, "] = ", lp[i], " on a generated token; expected a finite log-probability");
    if (t.versions[i] < 0 || (l.max_version >= 0 && t.versions[i] > l.max_version))
      return bad("versions[", i, "] = ", t.versions[i], " is not a published weights version (0..", l.max_version, ")");
  }
  if (trained == 0) return bad("loss_mask: no generated token to train on");
  if (!std::isfinite(t.reward) || std::abs(t.reward) > l.max_abs_reward)
    return bad("reward ", t.reward, " is not a finite number within +-", l.max_abs_reward);
  return absl::OkStatus();
}

}  // namespace interlace::rl
