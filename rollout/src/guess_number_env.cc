// guess-number: multi-turn; the environment answers higher, lower or correct.
// Reward 1/turns when found (falls with every turn used), 0 otherwise.
#include <random>

#include "absl/strings/str_cat.h"
#include "env_util.h"
#include "environments.h"

namespace interlace::rollout {
namespace {

class GuessEpisode final : public Episode {
 public:
  GuessEpisode(uint64_t seed, int64_t max) : max_(max) {
    std::mt19937_64 rng(seed);
    secret_ = std::uniform_int_distribution<int64_t>(1, max)(rng);
  }
  std::vector<model::Message> prompt() const override {
    return {env_util::msg(model::Role::kSystem, "Play the guessing game. Reply with a line 'Guess: N'."),
            env_util::msg(model::Role::kUser, absl::StrCat("I picked a whole number from 1 to ", max_,
                                              ". Guess it; I will say higher, lower or correct."))};
  }
  EnvReply on_assistant(const absl::StatusOr<model::Message>& turn) override {
    ++turns_;
    auto g = turn.ok() ? env_util::field(turn->content, "Guess") : std::nullopt;
    auto v = g ? env_util::parse_int(*g) : std::nullopt;
    if (!v) return {{env_util::msg(model::Role::kUser, "Please reply with a line 'Guess: N'.")}, false};
    if (*v == secret_) {
      reward_ = 1.0 / double(turns_);
      return {{env_util::msg(model::Role::kUser, "correct")}, true};
    }
    return {{env_util::msg(model::Role::kUser, *v < secret_ ? "higher" : "lower")}, false};
  }
  double reward() const override { return reward_; }
  std::vector<model::Message> demonstration() const override {
    std::vector<model::Message> out;
    int64_t lo = 1, hi = max_;
    for (;;) {
      const int64_t mid = (lo + hi) / 2;
      out.push_back(env_util::msg(model::Role::kAssistant, absl::StrCat("Guess: ", mid),
                     absl::StrCat("It is between ", lo, " and ", hi, "; try the middle.")));
      if (mid == secret_) {
        out.push_back(env_util::msg(model::Role::kUser, "correct"));
        return out;
      }
      out.push_back(env_util::msg(model::Role::kUser, mid < secret_ ? "higher" : "lower"));
      (mid < secret_ ? lo : hi) = mid < secret_ ? mid + 1 : mid - 1;
    }
  }

 private:
  int64_t max_, secret_ = 1, turns_ = 0;
  double reward_ = 0;
};

class GuessEnv final : public Environment {
 public:
  explicit GuessEnv(int64_t max) : max_(max) {}
  std::string name() const override { return "guess-number"; }
  std::unique_ptr<Episode> episode(uint64_t seed) const override { return std::make_unique<GuessEpisode>(seed, max_); }

 private:
  int64_t max_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Environment>> make_guess_number(const EnvOptions& options) {
  int64_t max = 64;
  if (absl::Status s = env_util::parse_options("guess-number", options, {{"max", {&max, 2, 1000000}}}); !s.ok())
    return s;
  return std::make_unique<GuessEnv>(max);
}

}  // namespace interlace::rollout
