// The learner service's event loop. It only wires the parts: the trajectory
// inbox (spool, dedup, complete groups), the task source (who runs which
// group), the RL step (on a training thread), the run log and the weight
// publisher. The sockets are three CURVE ROUTERs behind a ZAP handler.
#include "interlace/rl/learner_service.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/learner/checkpoint.h"
#include "interlace/metrics/registry.h"
#include "interlace/rl/learner_metrics.h"
#include "interlace/transport/nccl_weights.h"
#include "interlace/model/precision.h"
#include "interlace/rl/rl_step.h"
#include "interlace/rl/run_log.h"
#include "interlace/rl/service_util.h"
#include "interlace/rl/step_watchdog.h"
#include "interlace/rl/task_source.h"
#include "interlace/rl/trajectory_check.h"
#include "interlace/rl/trajectory_inbox.h"
#include "interlace/rl/weight_publisher.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/messages.h"
#include "interlace/transport/trajectory_codec.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace interlace::rl {
namespace {

// One help text for both labels of interlace_trajectories_stale_total.
constexpr char kStaleHelp[] = "trajectories older than eta versions at training time";

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
using transport::TrajectoryMessage;

constexpr transport::FrameLimits kTrajectoryLimits{.max_bytes = size_t{16} << 20};
constexpr transport::FrameLimits kSmallLimits{.max_bytes = size_t{64} << 10};

// Tests of a full disk where no small filesystem can be mounted set this.
int injected_spool_failures() {
  const char* every = std::getenv("INTERLACE_INJECT_SPOOL_FAILURES");
  return every ? std::max(0, std::atoi(every)) : 0;
}

class Learner {
 public:
  explicit Learner(const LearnerOptions& o)
      : o_(o),
        spec_(o.spec),
        received_(registry_.counter("interlace_trajectories_received_total", "trajectories accepted and spooled")),
        stalled_(registry_.gauge("interlace_learner_stalled", "1 while the watchdog sees no step in its limit")),
        stalls_(registry_.counter("interlace_learner_stalls_total", "stalls the watchdog reported")),
        invalid_(registry_.counter("interlace_trajectories_invalid_total",
                                   "trajectories refused (not spooled) because they would break training")),
        duplicates_(registry_.counter("interlace_trajectories_duplicate_total",
                                      "trajectories received again (already spooled); acknowledged and dropped")),
        stale_dropped_(registry_.counter("interlace_trajectories_stale_total", kStaleHelp, {{"action", "dropped"}})),
        stale_downweighted_(
            registry_.counter("interlace_trajectories_stale_total", kStaleHelp, {{"action", "downweighted"}})),
        trained_(registry_.counter("interlace_trajectories_trained_total", "trajectories trained on")),
        steps_(registry_.counter("interlace_learner_steps_total", "optimizer steps")),
        tasks_issued_(registry_.counter("interlace_tasks_issued_total", "groups handed to workers")),
        tasks_reissued_(registry_.counter("interlace_tasks_reissued_total",
                                          "groups handed out again after their worker restarted or timed out")),
        reward_(registry_.gauge("interlace_learner_reward", "mean reward of the last step's batch")),
        loss_(registry_.gauge("interlace_learner_loss", "objective value of the last step")),
        dlogp_(registry_.gauge("interlace_logprob_abs_diff_mean",
                               "mean |learner log-prob - rollout log-prob| over the last step's tokens")),
        k3_(registry_.gauge("interlace_mismatch_k3_kl", "k3 estimate of KL(rollout || learner), last step")),
        pearson_(registry_.gauge("interlace_prob_pearson",
                                 "Pearson correlation of rollout and learner token probabilities, last step")),
        staleness_(registry_.gauge("interlace_staleness_versions", "mean version lag of the last step's tokens")),
        spool_bytes_(registry_.gauge("interlace_spool_bytes", "bytes in the trajectory spool")),
        spool_compactions_(registry_.counter("interlace_spool_compactions_total",
                                             "spool rewrites keeping only untrained trajectories")),
        connections_refused_(registry_.counter("interlace_connections_refused_total",
                                               "connection attempts refused by the ZAP handler (no admitted CURVE key)")),
        rejects_(registry_, "learner", {"trajectories", "tasks", "weights"}) {
    metrics::register_build_info(registry_, transport::nccl::built_with_nccl());
  }

  int run();

 private:
  absl::Status restore();
  absl::Status publish();
  absl::Status bind_sockets();
  void handle_trajectory(const zmq::message_t& identity, const std::string& worker, std::string_view frame);
  void flush_acks();
  absl::Status check_issued(const transport::TrajectoryMessage& m, const std::string& worker) const;
  // What check_trajectory holds a trajectory to; versions unchecked for spool replay.
  TrajectoryLimits trajectory_limits(bool check_version) const;
  void drop_stale_groups();
  void handle_heartbeat(const zmq::message_t& identity, const std::string& worker, std::string_view frame);
  void handle_weight_request(const zmq::message_t& identity, const std::string& worker, std::string_view frame);
  void start_step();
  absl::Status finish_step(const RlStepResult& result);
  absl::Status checkpoint();
  void compact_spool();
  // Hands each [routing id][frame] to `handle` with the authenticated name of its sender.
  void receive(zmq::socket_t& socket, const char* port,
               const std::function<void(const zmq::message_t&, const std::string&, std::string_view)>& handle);

  LearnerOptions o_;
  JobSpec spec_;
  metrics::Registry registry_;
  metrics::Value &received_, &stalled_, &stalls_, &invalid_, &duplicates_, &stale_dropped_, &stale_downweighted_,
      &trained_, &steps_, &tasks_issued_, &tasks_reissued_, &reward_, &loss_, &dlogp_, &k3_, &pearson_, &staleness_,
      &spool_bytes_, &spool_compactions_, &connections_refused_;
  FrameRejects rejects_;
  LearnerStepMetrics step_metrics_{registry_};
  WeightPublisher weights_out_{registry_, spec_.weights_transport};

  std::unique_ptr<learner::TrainingModel> model_, ref_model_;
  std::unique_ptr<learner::Optimizer> optimizer_;
  learner::TrainerState state_;  // step == version: every step publishes
  std::optional<RunLog> log_;
  std::optional<TrajectoryInbox> inbox_;
  std::optional<TaskSource> tasks_source_;  // made once the start count is known
  int64_t stale_dropped_since_step_ = 0;

  Batch batch_;  // being trained on
  std::future<RlStepResult> training_;
  Clock::time_point step_started_;
  std::map<std::string, transport::HeartbeatMessage> heartbeats_;  // each worker's latest (cache figures)
  // Acks wait for the inbox's next sync (one fdatasync for many); if the sync
  // fails, those that acknowledge a staged trajectory are not sent.
  struct PendingAck {
    zmq::message_t identity;
    std::string frame;
    bool needs_sync;  // acknowledges a staged trajectory
  };
  std::vector<PendingAck> acks_;

  zmq::context_t ctx_{1};
  // Declared after the context: it must stop before the context ends.
  std::unique_ptr<transport::ZapAuthenticator> zap_;
  zmq::socket_t traj_, tasks_, weights_;
  Clock::time_point start_ = Clock::now(), last_step_ = Clock::now();
  // Newest version among the spooled trajectories read back at restart: the
  // learner before the restart may have published versions past the checkpoint.
  int64_t max_replayed_version_ = 0;
  Clock::time_point last_invalid_log_{};
};

void Learner::receive(zmq::socket_t& socket, const char* port,
                      const std::function<void(const zmq::message_t&, const std::string&, std::string_view)>& handle) {
  for (int n = 0; n < 256; ++n) {
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
    if (parts.size() != 2) {
      rejects_.reject(port, absl::StrCat("expected one frame after the routing id, got ", parts.size() - 1));
      continue;
    }
    // Every connection passed the ZAP handler, so this is the name of an
    // admitted key; a name written inside a message is never trusted.
    const std::string worker = transport::peer_name(parts[1]);
    if (worker.empty()) {
      rejects_.reject(port, "a frame without an authenticated sender");
      continue;
    }
    handle(parts[0], worker, std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
  }
}

absl::Status Learner::restore() {
  const std::string ckpt_root = run_path(o_.run_dir, "checkpoints");
  int64_t best = -1;
  std::string ckpt;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt_root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || name.find(".partial") != std::string::npos) continue;
    const int64_t s = std::atoll(name.c_str() + 5);
    if (s > best) best = s, ckpt = e.path().string();
  }
  auto precision = model::parse_precision(spec_.learner_precision);
  if (!precision.ok()) return precision.status();
  INTERLACE_ASSIGN_OR_RETURN(model_, learner::load_training_model(ckpt.empty() ? o_.endpoints.initial_model : ckpt));
  model_->set_precision(*precision);
  // Score and differentiate the distribution the workers sample from.
  model_->set_logit_temperature(spec_.temperature);
  optimizer_ = std::make_unique<learner::Optimizer>(spec_.optimizer, model_->weights());
  if (spec_.objective.kl_coef > 0) {
    INTERLACE_ASSIGN_OR_RETURN(ref_model_, learner::load_training_model(o_.endpoints.initial_model));
    ref_model_->set_precision(*precision);
    ref_model_->set_logit_temperature(spec_.temperature);
  }
  if (!ckpt.empty()) {
    INTERLACE_ASSIGN_OR_RETURN(state_, learner::load_checkpoint(ckpt, *optimizer_));
    spdlog::info("learner: resumed from {} (step {})", ckpt, state_.step);
  }
  // Group ids carry the learner's start count, so a restarted learner never
  // reuses an id a worker may still be running.
  const std::string starts_path = run_path(o_.run_dir, "learner-starts");
  int64_t starts = 0;
  if (auto t = core::read_file(starts_path); t.ok()) starts = std::atoll(t->c_str());
  INTERLACE_RETURN_IF_ERROR(core::write_file(starts_path, absl::StrCat(starts + 1, "\n")));
  tasks_source_.emplace(spec_, starts);

  // Steps (and stale drops, and metrics rows) after the checkpoint are redone:
  // the log is cut back to it; what it kept counts as consumed.
  std::set<SampleKey> consumed;
  INTERLACE_ASSIGN_OR_RETURN(auto log, RunLog::open(o_.run_dir, state_.step, &consumed));
  log_.emplace(std::move(log));

  const int every = injected_spool_failures();
  if (every > 0)
    spdlog::warn("learner: INTERLACE_INJECT_SPOOL_FAILURES={}: every {}th spool write fails as on a full disk (testing)",
                 every, every);
  TrajectoryInbox::Replayed replayed;
  INTERLACE_ASSIGN_OR_RETURN(
      auto inbox, TrajectoryInbox::open({.spool_path = run_path(o_.run_dir, "spool.bin"),
                                         .group_size = spec_.group_size,
                                         // Four times what the learner has in flight at most (async: eta + 1 batches).
                                         .max_partial_groups = 4 * (spec_.eta + 1) * spec_.groups_per_step,
                                         .inject_write_failures = every},
                                        consumed, trajectory_limits(false), &replayed));
  inbox_.emplace(std::move(inbox));
  if (replayed.damaged_bytes)
    spdlog::warn("learner: the spool had {} damaged byte(s) in {} place(s) (a crash mid-write, or corruption); every good "
                 "record around them is kept, and the bytes are moved to {}.damaged",
                 replayed.damaged_bytes, replayed.damaged_regions, inbox_->spool_path());
  // A record that does not decode or would break training (spooled by an older
  // learner that checked less) is set aside, not trained: it must not abort
  // every restart.
  for (const auto& q : replayed.quarantined) {
    spdlog::warn("learner: spool record {} is not trained on: {}", q.record, q.reason);
    log_->dropped(state_.step, q.key ? RunLog::ids_json({*q.key}) : json::array(),
                  {{"spool_record", q.record}, {"reason", q.reason}});
  }
  invalid_.add(double(replayed.quarantined.size()));
  max_replayed_version_ = replayed.max_version;
  // Partial groups from before the restart: whoever ran them may be gone; if
  // they do not complete in time they are handed out again.
  int64_t pending = 0;
  for (const auto& [group, samples] : inbox_->pending()) {
    pending += static_cast<int64_t>(samples.size());
    if (!inbox_->group_complete(group)) tasks_source_->adopt_unfinished(group, Clock::now());
  }
  spdlog::info("learner: {} spooled trajectories, {} not yet trained", replayed.records, pending);
  return absl::OkStatus();
}

absl::Status Learner::publish() {
  if (absl::Status s = weights_out_.publish(model_->weights(), state_.version); !s.ok())
    return absl::DataLossError(absl::StrCat("after step ", state_.step, ": ", s.message()));
  return absl::OkStatus();
}

void Learner::handle_trajectory(const zmq::message_t& identity, const std::string& worker, std::string_view frame) {
  auto m = transport::decode_trajectory(frame, kTrajectoryLimits);
  if (!m.ok()) return rejects_.reject("trajectories", std::string(m.status().message()));
  transport::AckMessage ack{m->job, m->trajectory.group, m->trajectory.sample, m->attempt, true, ""};
  const SampleKey key{m->trajectory.group, m->trajectory.sample};
  bool needs_sync = false;
  if (m->job != spec_.name) {
    ack.accepted = false;
    ack.reason = absl::StrCat("this learner does not run job '", m->job, "'");  // nor says which it runs
  } else if (absl::Status valid = check_trajectory(m->trajectory, trajectory_limits(true)); !valid.ok()) {
    ack.accepted = false;
    ack.reason = std::string(valid.message());
    invalid_.inc();
    if (Clock::now() - last_invalid_log_ > std::chrono::seconds(1)) {  // a flood of them must not flood the log
      last_invalid_log_ = Clock::now();
      spdlog::warn("learner: refused trajectory {}/{} from {}: {}", key.first, key.second, worker, ack.reason);
    }
  } else if (absl::Status issued = check_issued(*m, worker); !issued.ok()) {
    ack.accepted = false;
    ack.reason = std::string(issued.message());
    invalid_.inc();
  } else {
    // Offered after the content checks: a bad copy of a spooled one is refused.
    std::string reason;
    switch (inbox_->offer(std::move(*m), frame, &reason)) {
      case TrajectoryInbox::Offered::kStaged:
        needs_sync = true;
        break;
      case TrajectoryInbox::Offered::kDuplicate:
        duplicates_.inc();
        break;
      case TrajectoryInbox::Offered::kTooManyGroups:
        ack.accepted = false;
        ack.reason = std::move(reason);
        invalid_.inc();
        break;
      case TrajectoryInbox::Offered::kSpoolFailed:
        spdlog::error("learner: {}", reason);
        // This one and those staged since the last sync: none acknowledged, all resent.
        std::erase_if(acks_, [](const PendingAck& a) { return a.needs_sync; });
        return;
    }
  }
  acks_.push_back({zmq::message_t(identity.data(), identity.size()), transport::encode_ack(ack), needs_sync});
}

// Group ids are (learner start count << 32) + a counter, so the groups this
// learner issued are a known range; a group from an earlier start (before a
// restart) cannot be checked and is taken; one from a later start, or past
// the counter, was never issued.
absl::Status Learner::check_issued(const transport::TrajectoryMessage& m, const std::string& worker) const {
  if (inbox_->known({m.trajectory.group, m.trajectory.sample})) return absl::OkStatus();  // a resend (its ack was lost)
  return tasks_source_->check_issued(m.trajectory.group, worker, m.attempt);
}

TrajectoryLimits Learner::trajectory_limits(bool check_version) const {
  return {.vocab_size = model_->config().vocab_size,
          .group_size = spec_.group_size,
          .max_tokens = spec_.max_episode_tokens,
          .max_version = check_version ? std::max(state_.version, max_replayed_version_) : -1,
          .sampled_logprobs = spec_.temperature > 0};
}

void Learner::flush_acks() {
  if (acks_.empty()) return;
  const int64_t before = inbox_->known_count();
  auto completed = inbox_->sync();
  if (!completed.ok()) {
    spdlog::error("learner: {}; the trajectories since the last sync stay unacknowledged and will be resent",
                  std::string(completed.status().message()));
    std::erase_if(acks_, [](const PendingAck& a) { return a.needs_sync; });
  } else {
    received_.add(double(inbox_->known_count() - before));
    for (int64_t group : *completed) tasks_source_->finished(group);
  }
  spool_bytes_.set(double(inbox_->synced_bytes()));
  for (PendingAck& a : acks_) send_routed(traj_, a.identity, a.frame);
  acks_.clear();
}

void Learner::handle_heartbeat(const zmq::message_t& identity, const std::string& worker, std::string_view frame) {
  auto hb = transport::decode_heartbeat(frame, kSmallLimits);
  if (!hb.ok()) return rejects_.reject("tasks", std::string(hb.status().message()));
  // A dead incarnation's heartbeats can still sit in the socket's queue, read
  // fairly with the new one's: an incarnation that was replaced is stale.
  // (Its clock is not trusted: one heartbeat dated INT64_MAX once made every
  // later one look old, and the job stalled.)
  const auto now = Clock::now();
  const int64_t waiting_before = tasks_source_->waiting_reissue();
  const TaskSource::Seen seen = tasks_source_->worker_seen(worker, hb->incarnation, now);
  if (seen == TaskSource::Seen::kStale) return;
  if (seen == TaskSource::Seen::kRestarted)
    spdlog::info("learner: {} restarted (incarnation {:x}); handing its {} unfinished group(s) out again", worker,
                 hb->incarnation, tasks_source_->waiting_reissue() - waiting_before);
  heartbeats_[worker] = *hb;
  tasks_source_->expire(now);
  transport::TaskGrantMessage grant;
  grant.weights_version = state_.version;
  grant.weights_id = weights_out_.weights_id();
  grant.job_done = state_.step >= spec_.steps;
  if (!grant.job_done) {
    const TaskSource::Load load{.groups_held = static_cast<int64_t>(inbox_->complete_groups().size() + batch_.size()),
                                .step_running = training_.valid(),
                                .version = state_.version};
    TaskSource::Grant g = tasks_source_->grant(worker, hb->incarnation, hb->want_tasks, load,
                                               [this](int64_t group) { return inbox_->group_complete(group); }, now);
    tasks_issued_.add(double(g.new_groups));
    tasks_reissued_.add(double(g.reissued));
    grant.tasks = std::move(g.tasks);
  }
  send_routed(tasks_, identity, transport::encode_task_grant(grant));
}

void Learner::handle_weight_request(const zmq::message_t& identity, const std::string& worker, std::string_view frame) {
  auto req = transport::decode_weight_request(frame, kSmallLimits);
  if (!req.ok()) return rejects_.reject("weights", std::string(req.status().message()));
  weights_out_.answer(weights_, identity, worker, *req);
}

// With policy drop, complete groups more than eta versions behind are dropped
// (counted, and logged in dropped.jsonl) before a batch is assembled.
void Learner::drop_stale_groups() {
  if (spec_.stale_policy != StalePolicy::kDrop) return;
  const std::vector<SampleKey> dropped = inbox_->drop_stale(state_.version, spec_.eta);
  if (dropped.empty()) return;
  stale_dropped_.add(double(dropped.size()));
  stale_dropped_since_step_ += static_cast<int64_t>(dropped.size());
  log_->dropped(state_.step, RunLog::ids_json(dropped));
}

// The oldest complete groups go to the training thread, which touches only
// the batch, the model and the optimizer; state_ is read before it starts.
void Learner::start_step() {
  batch_ = inbox_->take(spec_.groups_per_step);
  step_started_ = Clock::now();
  const ModelState state{.model = *model_,
                         .optimizer = *optimizer_,
                         .reference = ref_model_.get(),
                         .step = state_.step,
                         .version = state_.version};
  training_ = std::async(std::launch::async, [this, state] { return rl_step(batch_, spec_, state); });
}

// Back on the main thread: the step is done; log it, publish the new weights.
absl::Status Learner::finish_step(const RlStepResult& r) {
  ++state_.step;
  ++state_.version;  // a skipped (NaN) step still publishes, so versions and steps stay equal

  log_->trained(state_.step, r.trained_ids);
  trained_.add(double(r.trained_ids.size()));
  stale_downweighted_.add(double(r.downweighted));
  steps_.inc();
  const double reward_mean = r.reward_n ? r.reward_sum / double(r.reward_n) : NAN;
  const double staleness = r.lag_n ? r.lag_sum / double(r.lag_n) : 0.0;
  reward_.set(reward_mean);
  loss_.set(r.objective.loss);
  dlogp_.set(r.mismatch.logprob_abs_diff_mean);
  k3_.set(r.mismatch.mismatch_k3_kl);
  pearson_.set(r.mismatch.prob_pearson);
  staleness_.set(staleness);
  uint64_t hit = 0, query = 0;
  for (const auto& [name, hb] : heartbeats_) hit += hb.cache_hit_tokens, query += hb.cache_query_tokens;
  const auto now = Clock::now();
  const double train_seconds = std::chrono::duration<double>(now - step_started_).count();
  step_metrics_.record(r, train_seconds);
  const double since = std::chrono::duration<double>(now - last_step_).count();
  const double tokens_per_second = since > 0 ? double(r.tokens) / since : 0.0;
  log_->metrics({{"step", state_.step},
                 {"version", state_.version},
                 {"reward", reward_mean},
                 {"loss", r.objective.loss},
                 {"kl", r.objective.kl},
                 {"clip_fraction", r.objective.clip_fraction()},
                 {"correction_fraction", r.objective.correction_fraction()},
                 {"grad_norm", r.optimizer.grad_norm},
                 {"lr", r.optimizer.lr},
                 {"applied", r.optimizer.applied},
                 {"no_signal", !r.signal},
                 {"trajectories", r.trained_ids.size()},
                 {"stale_dropped", stale_dropped_since_step_},
                 {"generated_tokens", r.tokens},
                 {"tokens_per_second", tokens_per_second},
                 {"staleness_mean", staleness},
                 {"staleness_max", r.lag_max},
                 {"mismatch", learner::to_json(r.mismatch)},
                 {"cache_hit_rate", query ? double(hit) / double(query) : 0.0},
                 {"train_seconds", train_seconds},
                 {"step_seconds", since},
                 {"elapsed_seconds", std::chrono::duration<double>(now - start_).count()},
                 {"duplicates", duplicates_.get()}});
  last_step_ = now;
  stale_dropped_since_step_ = 0;
  if (!o_.quiet) {
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const int width = 20, filled = int(width * state_.step / spec_.steps);
    std::fprintf(stderr,
                 "[%s%s] step %lld/%lld  reward %.3f  loss %+.4f  %.0f tok/s  staleness %.2f  |dlogp| %.2e  cache %.0f%%  "
                 "(%.0fs)\n",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(state_.step), static_cast<long long>(spec_.steps), reward_mean, r.objective.loss,
                 tokens_per_second, staleness, r.mismatch.logprob_abs_diff_mean,
                 query ? 100.0 * double(hit) / double(query) : 0.0, elapsed);
  }
  INTERLACE_RETURN_IF_ERROR(publish());
  if (spec_.checkpoint_every > 0 && state_.step % spec_.checkpoint_every == 0) {
    INTERLACE_RETURN_IF_ERROR(checkpoint());
    if (int64_t(inbox_->synced_bytes()) > spec_.spool_compact_bytes) compact_spool();
  }
  return absl::OkStatus();
}

// Right after a checkpoint, every trajectory a restart would replay is pending
// in the inbox (trained ones are in trained.jsonl up to the checkpoint, stale
// ones in dropped.jsonl; staged ones were synced before the step finished):
// the spool keeps those and nothing else. A restart rebuilds its duplicate set
// from the run log as well as the spool.
void Learner::compact_spool() {
  const uint64_t before = inbox_->synced_bytes();
  if (absl::Status s = inbox_->compact(); !s.ok()) {  // the old spool is still whole and open: carry on with it
    spdlog::warn("learner: compacting the spool failed: {}", std::string(s.message()));
    return;
  }
  int64_t kept = 0;
  for (const auto& [group, samples] : inbox_->pending()) kept += static_cast<int64_t>(samples.size());
  spool_compactions_.inc();
  spool_bytes_.set(double(inbox_->synced_bytes()));
  spdlog::info("learner: compacted the spool after step {}: {} -> {} bytes ({} untrained trajectories kept)", state_.step,
               before, inbox_->synced_bytes(), kept);
}

absl::Status Learner::checkpoint() {
  const std::string root = run_path(o_.run_dir, "checkpoints");
  const std::string dir = (fs::path(root) / absl::StrCat("step-", state_.step)).string();
  // A restart trusts the run's log up to the checkpoint (trained.jsonl says
  // which trajectories not to train again): it reaches the disk first.
  INTERLACE_RETURN_IF_ERROR(log_->sync());
  INTERLACE_RETURN_IF_ERROR(learner::save_checkpoint(dir, *model_, *optimizer_, state_, o_.endpoints.initial_model));
  // Keep the newest two.
  std::vector<std::pair<int64_t, fs::path>> all;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find(".partial") == std::string::npos)
      all.emplace_back(std::atoll(name.c_str() + 5), e.path());
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + 2 < all.size(); ++i) fs::remove_all(all[i].second, ec);
  return absl::OkStatus();
}

// The three ROUTERs, CURVE servers behind the ZAP handler. On the first start
// they bind ports the system picks (no window between choosing a port and
// taking it) and write them to endpoints.json for the workers; a restarted
// learner takes the same ports back, or new ones if something else holds them
// now (workers read endpoints.json again when the learner stops answering).
absl::Status Learner::bind_sockets() {
  const std::string keys = run_path(o_.run_dir, "keys");
  auto server = transport::load_or_make_curve_key_pair(keys, "server");
  if (!server.ok()) return server.status();
  auto zap = transport::ZapAuthenticator::start(ctx_, transport::client_keys_dir(keys));
  if (!zap.ok()) return zap.status();
  zap_ = std::move(*zap);
  traj_ = make_socket(ctx_, zmq::socket_type::router, 2 * int64_t(kTrajectoryLimits.max_bytes));
  tasks_ = make_socket(ctx_, zmq::socket_type::router, 2 * int64_t(kSmallLimits.max_bytes));
  weights_ = make_socket(ctx_, zmq::socket_type::router, 2 * int64_t(kSmallLimits.max_bytes));
  Endpoints bound = o_.endpoints;
  bool moved = false;
  for (auto [socket, port] : {std::pair{&traj_, &bound.trajectories}, std::pair{&tasks_, &bound.tasks},
                              std::pair{&weights_, &bound.weights}}) {
    transport::make_curve_server(*socket, *server);
    const std::string wanted = *port > 0 ? bound.tcp(*port) : absl::StrCat("tcp://", bound.host, ":*");
    try {
      socket->bind(wanted);
    } catch (const zmq::error_t& e) {
      if (*port == 0) return absl::UnavailableError(absl::StrCat("cannot bind ", wanted, ": ", e.what()));
      spdlog::warn("learner: port {} is taken now ({}); binding another one", *port, e.what());
      try {
        socket->bind(absl::StrCat("tcp://", bound.host, ":*"));
      } catch (const zmq::error_t& e2) {
        return absl::UnavailableError(absl::StrCat("cannot bind a port on ", bound.host, ": ", e2.what()));
      }
    }
    const std::string at = socket->get(zmq::sockopt::last_endpoint);
    const int actual = std::atoi(at.c_str() + at.rfind(':') + 1);
    moved |= actual != *port;
    *port = actual;
  }
  if (moved) {
    INTERLACE_RETURN_IF_ERROR(write_endpoints(o_.run_dir, bound));
    o_.endpoints = bound;
  }
  return absl::OkStatus();
}

int Learner::run() {
  if (absl::Status s = restore(); !s.ok()) {
    spdlog::error("learner: {}", std::string(s.message()));
    return 1;
  }
  auto http = metrics::MetricsExposer::start(registry_, o_.endpoints.host, o_.endpoints.learner_metrics);
  if (!http.ok()) {
    spdlog::error("learner: {}", std::string(http.status().message()));
    return 1;
  }
  if (absl::Status s = bind_sockets(); !s.ok()) {
    spdlog::error("learner: {}", std::string(s.message()));
    return 1;
  }
  weights_out_.start_nccl();
  if (absl::Status s = publish(); !s.ok()) {
    spdlog::error("learner: {}", std::string(s.message()));
    return 1;
  }
  if (!o_.quiet)
    std::fprintf(stderr, "learner: job %s, %s, %lld steps of %lld groups x %lld, eta %lld; metrics on http://%s:%d/metrics\n",
                 spec_.name.c_str(), staleness_mode_name(spec_.mode), static_cast<long long>(spec_.steps),
                 static_cast<long long>(spec_.groups_per_step), static_cast<long long>(spec_.group_size),
                 static_cast<long long>(spec_.eta), o_.endpoints.host.c_str(), (*http)->port());
  std::optional<Clock::time_point> done_at;
  if (state_.step >= spec_.steps) done_at = Clock::now();
  StepWatchdog watchdog(spec_.watchdog_factor, spec_.watchdog_min_s, Clock::now());
  bool reported_stall = false;
  for (;;) {
    if (!done_at) {
      if (auto waited = watchdog.stalled(Clock::now()); waited && !reported_stall) {
        reported_stall = true;
        stalled_.set(1);
        stalls_.inc();
        spdlog::error("learner: no step for {:.0f} s (the watchdog's limit is {:.0f} s): the job is stalled at step {}; "
                      "{} complete and {} unfinished groups held, {} groups out with workers, {} workers seen{}",
                      *waited, watchdog.limit_seconds(), state_.step, inbox_->complete_groups().size(),
                      inbox_->partial_groups(),
                      tasks_source_->running(), tasks_source_->workers(), spec_.watchdog_exit ? "; exiting (watchdog.exit)" : "");
        if (spec_.watchdog_exit) return 3;
      }
    }
    zmq::pollitem_t items[] = {{static_cast<void*>(traj_), 0, ZMQ_POLLIN, 0},
                               {static_cast<void*>(tasks_), 0, ZMQ_POLLIN, 0},
                               {static_cast<void*>(weights_), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 3, std::chrono::milliseconds(20));
    using Id = const zmq::message_t&;
    using Name = const std::string&;
    receive(traj_, "trajectories", [&](Id id, Name w, std::string_view f) { handle_trajectory(id, w, f); });
    flush_acks();
    receive(tasks_, "tasks", [&](Id id, Name w, std::string_view f) { handle_heartbeat(id, w, f); });
    receive(weights_, "weights", [&](Id id, Name w, std::string_view f) { handle_weight_request(id, w, f); });
    connections_refused_.set(double(zap_->refused()));
    weights_out_.count_nccl();
    if (done_at) {
      if (Clock::now() - *done_at > std::chrono::duration<double>(o_.linger_s)) break;
      continue;
    }
    if (training_.valid()) {
      if (training_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) continue;
      const RlStepResult result = training_.get();
      batch_.clear();
      watchdog.step_done(Clock::now());
      if (reported_stall) spdlog::info("learner: step {} done; no longer stalled", state_.step + 1);
      reported_stall = false;
      stalled_.set(0);
      if (absl::Status s = finish_step(result); !s.ok()) {
        spdlog::error("learner: {}", std::string(s.message()));
        return 1;
      }
      if (state_.step >= spec_.steps) {
        const std::string final_dir = run_path(o_.run_dir, "final-model");
        if (absl::Status s = learner::save_model(final_dir, *model_, o_.endpoints.initial_model); !s.ok()) {
          spdlog::error("learner: {}", std::string(s.message()));
          return 1;
        }
        if (absl::Status s = checkpoint(); !s.ok()) spdlog::warn("learner: final checkpoint: {}", std::string(s.message()));
        done_at = Clock::now();
      }
      continue;
    }
    drop_stale_groups();
    if (static_cast<int64_t>(inbox_->complete_groups().size()) >= spec_.groups_per_step) start_step();
  }
  save_final_metrics(registry_, o_.run_dir, "learner");
  return 0;
}

}  // namespace

int run_learner(const LearnerOptions& options) {
  Learner learner(options);
  return learner.run();
}

}  // namespace interlace::rl
