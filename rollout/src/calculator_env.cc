// calculator: arithmetic word problems with a `calc` tool. Reward 1 for the
// exact final answer ("Answer: N"), else 0.
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "env_util.h"
#include "environments.h"

namespace interlace::rollout {
namespace {

struct Problem {
  std::string question, expression;
  int64_t answer;
};

// Options: max_number=N draws every number from [1 or 2, N] instead of the
// default ranges (smaller numbers: fewer digits to copy, an easier task for a
// small model); short_prompt=1 uses a one-line system prompt (fewer tokens
// per episode); demo_guess=P makes P% of the gold demonstrations imperfect:
// they skip the tool and answer a wrong guess. SFT on them imitates that habit
// P% of the time when sampling (greedy decoding still takes the majority, the
// tool), which leaves RL something real to remove: the main job's headroom
// comes from this rate, not from where an under-trained warm-up happens to
// stop (issue 17); guess_uniform=1 draws those guesses independently of the
// answer (see demo_guess below). notes=N puts N lines of unrelated facts with
// their own numbers ("Note: Mia has 4 stamps.") before the question: a longer
// context where the numbers to copy must be told from distractors (what
// `interlace study` evaluates on contexts longer than the training ones).
struct CalculatorOptions {
  int64_t max_number = 0;  // 0: a in [2,30], b in [2,20], c in [1,40]
  int64_t short_prompt = 0;
  int64_t demo_guess = 0;  // percent of demonstrations that guess without the tool
  int64_t guess_uniform = 0;  // 1: those guesses are uniform in [1, 40], not near the answer
  int64_t notes = 0;          // distractor lines before the question
};

// Episode `seed`'s distractor lines, from a stream of their own (the problem
// is the same whatever their number), numbers in the problem's range.
std::string notes_for(uint64_t seed, const CalculatorOptions& o) {
  static const char* kNames[] = {"Mia", "Sam", "Ann", "Leo", "Zoe", "Max", "Ivy", "Ben"};
  static const char* kThings[] = {"stamps", "pens", "books", "cards", "shells", "coins", "apples", "kites"};
  std::mt19937_64 rng(seed ^ 0x5bd1e9955bd1e995ull);
  auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  const int hi = o.max_number ? static_cast<int>(o.max_number) : 30;
  std::string out;
  for (int64_t i = 0; i < o.notes; ++i)
    absl::StrAppend(&out, "Note: ", kNames[pick(8)], " has ", 2 + pick(hi - 1), " ", kThings[pick(8)], ".\n");
  return out;
}

// Whether episode `seed`'s demonstration guesses, and the (wrong) guess: drawn
// from a stream of its own so the problem is the same whatever the rate.
// Near (the default): answer +- 1..3. guess_uniform=1: uniform in [1, 40]
// whatever the problem. Near guesses teach the model to estimate "Answer: N"
// from the question, and that habit leaks into tool-using episodes: in the
// main job's warm-ups that stalled at 0.75-0.77 greedy, nearly every failure
// called the tool with the right expression and then answered its own
// estimate instead of the tool's result (issue 17's notes).
std::optional<int64_t> demo_guess(uint64_t seed, int64_t percent, int64_t answer, bool uniform) {
  if (percent == 0) return std::nullopt;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  if (std::uniform_int_distribution<int64_t>(0, 99)(rng) >= percent) return std::nullopt;
  if (!uniform) {
    const int64_t off = std::uniform_int_distribution<int64_t>(1, 3)(rng);
    return std::uniform_int_distribution<int>(0, 1)(rng) ? answer + off : answer - off;
  }
  for (;;)
    if (const int64_t g = std::uniform_int_distribution<int64_t>(1, 40)(rng); g != answer) return g;
}

Problem make_problem(uint64_t seed, const CalculatorOptions& o) {
  std::mt19937_64 rng(seed);
  auto num = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int m = static_cast<int>(o.max_number);
  const int kind = num(0, 3), a = num(2, m ? m : 30), b = num(2, m ? m : 20), c = num(1, m ? m : 40);
  switch (kind) {
    case 0:
      return {absl::StrCat("A shop has ", a, " crates with ", b, " bottles in each. It sells ", c,
                           " bottles. How many bottles are left?"),
              absl::StrCat(a, "*", b, "-", c), int64_t(a) * b - c};
    case 1:
      return {absl::StrCat(a, " friends share ", a * b, " marbles equally, then each finds ", c,
                           " more. How many marbles does each friend have?"),
              absl::StrCat(a * b, "/", a, "+", c), int64_t(b) + c};
    case 2:
      return {absl::StrCat("Tom has ", c, " coins. He earns ", b, " coins a day for ", a,
                           " days. How many coins does he have now?"),
              absl::StrCat(c, "+", b, "*", a), int64_t(c) + int64_t(b) * a};
    default:
      return {absl::StrCat("A train has ", a, " cars with ", b, " seats each and ", c,
                           " seats are taken. How many seats are free?"),
              absl::StrCat(a, "*", b, "-", c), int64_t(a) * b - c};
  }
}

constexpr char kSystem[] =
    "You solve arithmetic word problems. To compute, call the tool calc with "
    "{\"expression\": \"...\"} (whole numbers, + - * / and parentheses). "
    "Finish with a line 'Answer: N'.";
constexpr char kShortSystem[] = "Use calc for arithmetic. End with 'Answer: N'.";

class CalculatorEpisode final : public Episode {
 public:
  CalculatorEpisode(uint64_t seed, const CalculatorOptions& o)
      : p_(make_problem(seed, o)),
        short_(o.short_prompt),
        notes_(notes_for(seed, o)),
        guess_(demo_guess(seed, o.demo_guess, p_.answer, o.guess_uniform != 0)) {}

  std::vector<model::Message> prompt() const override {
    return {env_util::msg(model::Role::kSystem, short_ ? kShortSystem : kSystem),
            env_util::msg(model::Role::kUser, notes_ + p_.question)};
  }

  EnvReply on_assistant(const absl::StatusOr<model::Message>& turn) override {
    EnvReply r;
    if (!turn.ok()) {  // a malformed tool call: say so, the episode goes on
      r.messages.push_back(env_util::msg(model::Role::kTool, absl::StrCat("error: ", turn.status().message())));
      return r;
    }
    if (turn->tool_calls.empty()) {
      auto ans = env_util::field(turn->content, "Answer");
      auto v = ans ? env_util::parse_int(*ans) : std::nullopt;
      reward_ = v && *v == p_.answer ? 1.0 : 0.0;
      r.done = true;
      return r;
    }
    for (const model::ToolCall& call : turn->tool_calls) {
      std::string result;
      if (call.name != "calc") {
        result = absl::StrCat("error: unknown tool '", call.name, "' (the only tool is calc)");
      } else if (!call.arguments.contains("expression") || !call.arguments["expression"].is_string()) {
        result = "error: calc needs {\"expression\": \"...\"}";
      } else {
        auto v = evaluate_expression(call.arguments["expression"].get<std::string>());
        result = v.ok() ? absl::StrCat(*v) : absl::StrCat("error: ", v.status().message());
      }
      r.messages.push_back(env_util::msg(model::Role::kTool, result));
    }
    return r;
  }

  double reward() const override { return reward_; }

  std::vector<model::Message> demonstration() const override {
    if (guess_) return {env_util::msg(model::Role::kAssistant, absl::StrCat("Answer: ", *guess_), "I know this one.")};
    model::Message call = env_util::msg(model::Role::kAssistant, "", absl::StrCat("Compute ", p_.expression, " with calc."));
    call.tool_calls.push_back({"calc", {{"expression", p_.expression}}});
    return {call,
            env_util::msg(model::Role::kTool, absl::StrCat(p_.answer)),
            env_util::msg(model::Role::kAssistant, absl::StrCat("Answer: ", p_.answer), "The tool returned the result.")};
  }

 private:
  Problem p_;
  bool short_ = false;
  std::string notes_;
  std::optional<int64_t> guess_;  // the demonstration's wrong guess, if it guesses
  double reward_ = 0;
};

class CalculatorEnv final : public Environment {
 public:
  explicit CalculatorEnv(CalculatorOptions o) : o_(o) {}
  std::string name() const override { return "calculator"; }
  std::unique_ptr<Episode> episode(uint64_t seed) const override {
    return std::make_unique<CalculatorEpisode>(seed, o_);
  }

 private:
  CalculatorOptions o_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Environment>> make_calculator(const std::map<std::string, std::string>& options) {
  CalculatorOptions o;
  if (absl::Status s = env_util::parse_options(
          "calculator", options, {{"max_number", {&o.max_number, 2, 1000000}}, {"short_prompt", {&o.short_prompt, 0, 1}},
                                   {"demo_guess", {&o.demo_guess, 0, 100}}, {"guess_uniform", {&o.guess_uniform, 0, 1}},
                                   {"notes", {&o.notes, 0, 100000}}});
      !s.ok())
    return s;
  return std::make_unique<CalculatorEnv>(o);
}

}  // namespace interlace::rollout
