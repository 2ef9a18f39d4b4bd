// kv-retrieval: a context of key/value lines; the question asks for the value
// reached by following `hops` lookups from a start key. No tools. The long-
// context multi-hop probe on which hybrid attention is known to be weaker:
// `pairs` scales the context (about 11 tokens a pair with the byte tokenizer,
// so pairs=3000 is ~33K tokens). key_len=1 makes every key and value one
// letter (one byte token), the associative-recall form (MQAR) of the
// literature; short_prompt=1 drops the instructions' prose (fewer tokens per
// episode). Neither makes it quick to learn from scratch: tiny-full after
// 1500 SFT steps on pairs=8,hops=1,key_len=1 solved 3% of validation tasks.
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "env_util.h"
#include "environments.h"

namespace interlace::rollout {
namespace {

struct Task {
  std::string context, start, answer;
  std::vector<std::string> chain;
};

struct KvOptions {
  int64_t pairs = 24, hops = 2, key_len = 4, short_prompt = 0;
};

std::string random_key(std::mt19937_64& rng, int64_t key_len) {
  std::string k(static_cast<size_t>(key_len), 'a');
  for (char& c : k) c = static_cast<char>('a' + std::uniform_int_distribution<int>(0, 25)(rng));
  return k;
}

Task make_task(uint64_t seed, const KvOptions& o) {
  const int64_t pairs = o.pairs, hops = o.hops;
  std::mt19937_64 rng(seed);
  std::set<std::string> used;
  auto fresh = [&] {
    for (;;) {
      std::string k = random_key(rng, o.key_len);
      if (used.insert(k).second) return k;
    }
  };
  Task t;
  for (int64_t i = 0; i <= hops; ++i) t.chain.push_back(fresh());
  std::vector<std::pair<std::string, std::string>> lines;
  for (int64_t i = 0; i < hops; ++i) lines.push_back({t.chain[i], t.chain[i + 1]});
  while (static_cast<int64_t>(lines.size()) < pairs) lines.push_back({fresh(), random_key(rng, o.key_len)});
  std::shuffle(lines.begin(), lines.end(), rng);
  for (const auto& [k, v] : lines) absl::StrAppend(&t.context, k, ": ", v, "\n");
  t.start = t.chain.front();
  t.answer = t.chain.back();
  return t;
}

class KvEpisode final : public Episode {
 public:
  KvEpisode(uint64_t seed, const KvOptions& o) : t_(make_task(seed, o)), hops_(o.hops), short_(o.short_prompt != 0) {}

  std::vector<model::Message> prompt() const override {
    if (short_)
      return {env_util::msg(model::Role::kSystem, "Follow the keys. End with 'Answer: KEY'."),
              env_util::msg(model::Role::kUser, absl::StrCat(t_.context, "Start: ", t_.start, ", ", hops_, " lookups."))};
    return {env_util::msg(model::Role::kSystem, "Answer from the context. Finish with a line 'Answer: KEY'."),
            env_util::msg(model::Role::kUser, absl::StrCat(t_.context, "\nStart at ", t_.start, ". Look up its value, then look up ",
                                              "that value as a key, ", hops_, " lookups in all. Where do you end?"))};
  }
  EnvReply on_assistant(const absl::StatusOr<model::Message>& turn) override {
    auto ans = turn.ok() ? env_util::field(turn->content, "Answer") : std::nullopt;
    reward_ = ans && *ans == t_.answer ? 1.0 : 0.0;
    return {{}, true};
  }
  double reward() const override { return reward_; }
  std::vector<model::Message> demonstration() const override {
    std::string path;
    for (const auto& k : t_.chain) absl::StrAppend(&path, path.empty() ? "" : " -> ", k);
    return {env_util::msg(model::Role::kAssistant, absl::StrCat("Answer: ", t_.answer), path)};
  }

 private:
  Task t_;
  int64_t hops_;
  bool short_;
  double reward_ = 0;
};

class KvEnv final : public Environment {
 public:
  explicit KvEnv(const KvOptions& o) : o_(o) {}
  std::string name() const override { return "kv-retrieval"; }
  std::unique_ptr<Episode> episode(uint64_t seed) const override {
    return std::make_unique<KvEpisode>(seed, o_);
  }

 private:
  KvOptions o_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Environment>> make_kv_retrieval(const EnvOptions& options) {
  KvOptions o;
  if (absl::Status s = env_util::parse_options("kv-retrieval", options,
                                               {{"pairs", {&o.pairs, 1, 100000}},
                                                {"hops", {&o.hops, 1, 64}},
                                                {"key_len", {&o.key_len, 1, 8}},
                                                {"short_prompt", {&o.short_prompt, 0, 1}}});
      !s.ok())
    return s;
  if (o.hops >= o.pairs)
    return absl::InvalidArgumentError(absl::StrCat("kv-retrieval: hops (", o.hops, ") must be below pairs (", o.pairs, ")"));
  // Every line's key and the chain's end are distinct keys, pairs + 1 of
  // them, drawn from 26^key_len. At most half of those: when nearly every key
  // has a line, the chain's end is the one letter without a line, and the
  // answer can be told without following the chain.
  double distinct = 1;
  for (int64_t i = 0; i < o.key_len; ++i) distinct *= 26;
  if (double(o.pairs + 1) > distinct / 2)
    return absl::InvalidArgumentError(absl::StrCat("kv-retrieval: pairs=", o.pairs, " is too many for key_len=", o.key_len,
                                                   " (at most ", int64_t(distinct / 2) - 1,
                                                   " pairs, so the answer is not the only key without a line); raise key_len"));
  return std::make_unique<KvEnv>(o);
}

}  // namespace interlace::rollout
