#include "interlace/rollout/agent.h"

#include <cmath>
#include <map>

#include "interlace/core/status.h"

namespace interlace::rollout {

int64_t Trajectory::generated_tokens() const {
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m;
  return n;
}

namespace {

// Appends tokens the model did not generate (mask 0).
void append_context(Trajectory& t, const std::vector<int32_t>& tokens) {
  t.tokens.insert(t.tokens.end(), tokens.begin(), tokens.end());
  t.loss_mask.insert(t.loss_mask.end(), tokens.size(), 0);
  t.logprobs.insert(t.logprobs.end(), tokens.size(), NAN);
  t.sampled_logprobs.insert(t.sampled_logprobs.end(), tokens.size(), NAN);
  t.versions.insert(t.versions.end(), tokens.size(), -1);
}

void append_message(Trajectory& t, const model::ChatTemplate& tmpl, const model::Message& m) {
  const int64_t start = static_cast<int64_t>(t.tokens.size());
  append_context(t, tmpl.render_message(m));
  t.turns.push_back({model::role_name(m.role), start, static_cast<int64_t>(t.tokens.size())});
}

}  // namespace

Demonstration render_demonstration(const model::ChatTemplate& tmpl, const Episode& episode) {
  Demonstration d;
  auto add = [&](const std::vector<int32_t>& tokens, uint8_t mask) {
    d.tokens.insert(d.tokens.end(), tokens.begin(), tokens.end());
    d.loss_mask.insert(d.loss_mask.end(), tokens.size(), mask);
  };
  for (const model::Message& m : episode.prompt()) add(tmpl.render_message(m), 0);
  const std::vector<int32_t> header = tmpl.generation_prompt();
  for (const model::Message& m : episode.demonstration()) {
    std::vector<int32_t> tokens = tmpl.render_message(m);
    if (m.role != model::Role::kAssistant) {
      add(tokens, 0);
      continue;
    }
    // The header is inserted by the loop, the rest is what the model generates.
    INTERLACE_CHECK(std::equal(header.begin(), header.end(), tokens.begin()),
                    "an assistant message must start with the generation prompt");
    add(header, 0);
    add(std::vector<int32_t>(tokens.begin() + header.size(), tokens.end()), 1);
  }
  return d;
}

AgentLoop::AgentLoop(Engine& engine, const model::ChatTemplate& tmpl, const model::Tokenizer& tokenizer,
                     AgentLimits limits)
    : engine_(engine), tmpl_(tmpl), limits_(limits) {
  stop_ids_.push_back(tmpl.end_of_turn());
  if (auto eos = tokenizer.special_id("<|endoftext|>")) stop_ids_.push_back(*eos);
}

std::vector<Trajectory> AgentLoop::run(std::vector<EpisodeSpec> episodes,
                                       const std::function<void(const Trajectory&)>& on_finish,
                                       const std::function<void()>& between_steps) {
  struct Live {
    Trajectory t;
    int64_t turns = 0;
    bool done = false;
    int64_t turn_budget = 0;  // max_new_tokens of the turn in flight
  };
  std::vector<Live> live(episodes.size());
  std::map<int64_t, size_t> in_flight;  // engine request id -> episode
  const std::vector<int32_t> header = tmpl_.generation_prompt();

  auto finish = [&](size_t i, const std::string& reason) {
    Live& l = live[i];
    l.done = true;
    l.t.finish_reason = reason;
    l.t.reward = episodes[i].episode->reward();
    if (on_finish) on_finish(l.t);
  };
  // Starts episode i's next assistant turn, or ends the episode if a limit says so.
  auto limits_of = [&](size_t i) -> const AgentLimits& { return episodes[i].limits ? *episodes[i].limits : limits_; };
  auto next_turn = [&](size_t i) {
    Live& l = live[i];
    const AgentLimits& limits = limits_of(i);
    if (l.turns >= limits.max_turns) return finish(i, "max_turns");
    const int64_t room =
        limits.max_episode_tokens - static_cast<int64_t>(l.t.tokens.size()) - static_cast<int64_t>(header.size());
    if (room <= 0) return finish(i, "max_episode_tokens");
    const int64_t start = static_cast<int64_t>(l.t.tokens.size());
    append_context(l.t, header);
    l.t.turns.push_back({"assistant", start, start});
    Request r;
    r.prompt = l.t.tokens;
    r.sampling = episodes[i].sampling;
    r.sampling.seed = episodes[i].sampling.seed * 1000003 + static_cast<uint64_t>(l.turns);
    r.sampling.max_new_tokens = l.turn_budget = std::min(limits.max_turn_tokens, room);
    r.sampling.stop_token_ids = stop_ids_;
    ++l.turns;
    in_flight[engine_.submit(std::move(r))] = i;
  };

  for (size_t i = 0; i < episodes.size(); ++i) {
    Live& l = live[i];
    l.t.task_seed = episodes[i].task_seed;
    l.t.group = episodes[i].group;
    l.t.sample = episodes[i].sample;
    for (const model::Message& m : episodes[i].episode->prompt()) append_message(l.t, tmpl_, m);
    next_turn(i);
  }
  while (!in_flight.empty()) {
    engine_.step();
    if (between_steps) between_steps();
    for (RequestOutput& o : engine_.take_finished()) {
      auto it = in_flight.find(o.id);
      if (it == in_flight.end()) continue;  // not ours
      const size_t i = it->second;
      in_flight.erase(it);
      Live& l = live[i];
      Trajectory& t = l.t;
      // Exactly the generated tokens, as generated.
      t.tokens.insert(t.tokens.end(), o.tokens.begin(), o.tokens.end());
      t.loss_mask.insert(t.loss_mask.end(), o.tokens.size(), 1);
      t.logprobs.insert(t.logprobs.end(), o.raw_logprobs.begin(), o.raw_logprobs.end());
      t.sampled_logprobs.insert(t.sampled_logprobs.end(), o.sampled_logprobs.begin(), o.sampled_logprobs.end());
      t.versions.insert(t.versions.end(), o.versions.begin(), o.versions.end());
      t.turns.back().end = static_cast<int64_t>(t.tokens.size());
      t.cached_tokens += o.cached_tokens;
      if (o.finish == FinishReason::kAborted) {
        finish(i, "aborted");
        continue;
      }
      if (o.finish == FinishReason::kLength) {
        const bool turn_limit = l.turn_budget == limits_of(i).max_turn_tokens;
        finish(i, turn_limit ? "max_turn_tokens" : "max_episode_tokens");
        continue;
      }
      const EnvReply reply = episodes[i].episode->on_assistant(tmpl_.parse_assistant(o.tokens));
      for (const model::Message& m : reply.messages) append_message(t, tmpl_, m);
      if (reply.done) {
        finish(i, "done");
      } else if (static_cast<int64_t>(t.tokens.size()) >= limits_of(i).max_episode_tokens) {
        finish(i, "max_episode_tokens");
      } else {
        next_turn(i);
      }
    }
  }
  std::vector<Trajectory> out;
  for (Live& l : live) out.push_back(std::move(l.t));
  return out;
}

}  // namespace interlace::rollout
