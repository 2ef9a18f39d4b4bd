#include "interlace/rl/learner_service.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <set>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/learner/checkpoint.h"
#include "interlace/learner/objectives.h"
#include "interlace/learner/precision_metrics.h"
#include "interlace/metrics/http_server.h"
#include "interlace/metrics/registry.h"
#include "interlace/model/precision.h"
#include "interlace/model/safetensors.h"
#include "interlace/rl/rl_batch.h"
#include "interlace/rl/service_util.h"
#include "interlace/rl/step_watchdog.h"
#include "interlace/rl/task_source.h"
#include "interlace/rl/trajectory_check.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/messages.h"
#include "interlace/transport/spool.h"
#include "interlace/transport/trajectory_codec.h"
#include "interlace/transport/weight_sync.h"
#include "interlace/transport/nccl_weights.h"
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

// (group, sample): what a trajectory is trained on at most once as.
using SampleKey = std::pair<int64_t, int64_t>;

// Tests of a full disk where no small filesystem can be mounted set this.
int injected_spool_failures() {
  const char* every = std::getenv("INTERLACE_INJECT_SPOOL_FAILURES");
  return every ? std::max(0, std::atoi(every)) : 0;
}

struct StepResult {
  learner::ObjectiveStats stats;
  learner::StepReport rep;
  learner::MismatchMetrics mm;
  bool signal = false;
  json trained_ids = json::array();
  double reward_sum = 0;
  int64_t reward_n = 0, tokens = 0, lag_n = 0, groups = 0;
  double lag_sum = 0, lag_max = 0;
  Clock::time_point t0;
};


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
        version_gauge_(registry_.gauge("interlace_weights_version", "weights version published")),
        sync_bytes_(registry_.counter("interlace_weight_sync_bytes_total", "weight bytes sent to workers (ZeroMQ chunks and NCCL broadcasts)")),
        sync_seconds_(registry_.counter("interlace_weight_sync_seconds_total",
                                        "seconds spent serialising and sending weights")),
        spool_bytes_(registry_.gauge("interlace_spool_bytes", "bytes in the trajectory spool")),
        spool_compactions_(registry_.counter("interlace_spool_compactions_total",
                                             "spool rewrites keeping only untrained trajectories")),
        nccl_offers_(registry_.counter("interlace_weight_sync_nccl_offers_total",
                                       "weight requests answered with an NCCL broadcast (weights.transport nccl)")),
        nccl_sent_(registry_.counter("interlace_weight_sync_nccl_broadcasts_total", "NCCL weight broadcasts",
                                     {{"result", "sent"}})),
        nccl_failed_(registry_.counter("interlace_weight_sync_nccl_broadcasts_total", "NCCL weight broadcasts",
                                       {{"result", "failed"}})),
        connections_refused_(registry_.counter("interlace_connections_refused_total",
                                               "connection attempts refused by the ZAP handler (no admitted CURVE key)")),
        rejects_(registry_, "learner") {}

  int run();

 private:
  absl::Status restore();
  absl::Status publish();
  absl::Status bind_sockets();
  void handle_trajectory(const zmq::message_t& identity, const std::string& worker, std::string_view frame);
  void flush_acks();
  void drop_staged();
  absl::Status check_issued(const transport::TrajectoryMessage& m, const std::string& worker) const;
  int64_t partial_groups() const;
  int64_t max_partial_groups() const;
  // What check_trajectory holds a trajectory to; versions unchecked for spool replay.
  TrajectoryLimits trajectory_limits(bool check_version) const;
  int64_t group_lag(int64_t group) const;
  void drop_stale_groups();
  void handle_heartbeat(const zmq::message_t& identity, const std::string& worker, std::string_view frame);
  void handle_weight_request(const zmq::message_t& identity, const std::string& worker, std::string_view frame);
  void start_nccl();
  void count_nccl();
  bool group_complete(int64_t group) const;
  std::vector<int64_t> complete_groups() const;
  StepResult compute_step(const Batch& batch) const;
  absl::Status finish_step(const StepResult& result);
  absl::Status checkpoint();
  absl::Status compact_spool();
  // Hands each [routing id][frame] to `handle` with the authenticated name of its sender.
  void receive(zmq::socket_t& socket, const char* port,
               const std::function<void(const zmq::message_t&, const std::string&, std::string_view)>& handle);

  LearnerOptions o_;
  JobSpec spec_;
  metrics::Registry registry_;
  metrics::Value &received_, &stalled_, &stalls_, &invalid_, &duplicates_, &stale_dropped_, &stale_downweighted_, &trained_, &steps_, &tasks_issued_,
      &tasks_reissued_, &reward_, &loss_, &dlogp_, &k3_, &pearson_, &staleness_, &version_gauge_, &sync_bytes_,
      &sync_seconds_, &spool_bytes_, &spool_compactions_, &nccl_offers_, &nccl_sent_, &nccl_failed_, &connections_refused_;
  FrameRejects rejects_;

  std::unique_ptr<learner::TrainingModel> model_, ref_model_;
  std::unique_ptr<learner::Optimizer> optimizer_;
  learner::TrainerState state_;  // step == version: every step publishes
  std::optional<transport::Spool> spool_;
  std::ofstream trained_log_, metrics_log_, dropped_log_;
  int64_t stale_dropped_since_step_ = 0;

  Batch pending_;                                                     // not trained yet
  Batch batch_;                                                       // being trained on
  std::future<StepResult> training_;
  std::set<SampleKey> spooled_;                                       // every key ever accepted
  std::optional<TaskSource> tasks_source_;                             // made once the start count is known
  std::map<std::string, transport::HeartbeatMessage> heartbeats_;     // each worker's latest (cache figures)
  // Acks wait for the spool's next fdatasync; so do the trajectories appended
  // since the last one (staged_): only once synced are they marked spooled
  // (a resend is then a duplicate) and queued for training. If the write or
  // the sync fails, they are dropped unacknowledged and their workers resend.
  struct PendingAck {
    zmq::message_t identity;
    std::string frame;
    bool needs_sync;  // acknowledges a trajectory in staged_
  };
  std::vector<PendingAck> acks_;
  std::map<SampleKey, TrajectoryMessage> staged_;

  zmq::context_t ctx_{1};
  // Declared after the context: it must stop before the context ends.
  std::unique_ptr<transport::ZapAuthenticator> zap_;
  zmq::socket_t traj_, tasks_, weights_;
  // The current publication's chunk frames, shared by every send of them.
  std::shared_ptr<const std::vector<std::string>> chunk_frames_ = std::make_shared<std::vector<std::string>>();
  uint64_t weights_id_ = 0;
  std::unique_ptr<transport::nccl::WeightSender> nccl_;  // weights.transport nccl, when a device is there
  transport::nccl::WeightSender::Counts nccl_counted_;
  std::mt19937_64 rng_{std::random_device{}()};
  Clock::time_point start_ = Clock::now(), last_step_ = Clock::now();
  int64_t tokens_since_step_ = 0;
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
  // cut the logs back to it; what they kept counts as consumed.
  const int64_t ckpt_step = state_.step;
  std::set<SampleKey> trained;
  auto consumed = [&](const std::vector<json>& rows) {
    for (const json& row : rows)
      for (const auto& id : row["ids"]) trained.insert({id[0].get<int64_t>(), id[1].get<int64_t>()});
  };
  const std::string trained_path = run_path(o_.run_dir, "trained.jsonl");
  INTERLACE_ASSIGN_OR_RETURN(auto trained_rows, keep_jsonl_rows(trained_path, [&](const json& j) {
                               return j.value("step", ckpt_step + 1) <= ckpt_step;
                             }));
  consumed(trained_rows);
  // A drop logged after step s happened after checkpoint s was written.
  const std::string dropped_path = run_path(o_.run_dir, "dropped.jsonl");
  INTERLACE_ASSIGN_OR_RETURN(auto dropped_rows, keep_jsonl_rows(dropped_path, [&](const json& j) {
                               return j.value("after_step", ckpt_step) < ckpt_step;
                             }));
  consumed(dropped_rows);
  const std::string metrics_path = run_path(o_.run_dir, "metrics.jsonl");
  INTERLACE_RETURN_IF_ERROR(keep_jsonl_rows(metrics_path, [&](const json& j) {
                              return j.value("step", ckpt_step + 1) <= ckpt_step;
                            }).status());
  trained_log_.open(trained_path, std::ios::app);
  dropped_log_.open(dropped_path, std::ios::app);
  metrics_log_.open(metrics_path, std::ios::app);

  transport::Spool::Recovered recovered;
  auto spool = transport::Spool::open(run_path(o_.run_dir, "spool.bin"), &recovered);
  if (!spool.ok()) return spool.status();
  spool_.emplace(std::move(*spool));
  if (const int every = injected_spool_failures(); every > 0) {
    spdlog::warn("learner: INTERLACE_INJECT_SPOOL_FAILURES={}: every {}th spool write fails as on a full disk (testing)",
                 every, every);
    spool_->inject_write_failures(every);
  }
  if (recovered.damaged_bytes)
    spdlog::warn("learner: the spool had {} damaged byte(s) in {} place(s) (a crash mid-write, or corruption); every good "
                 "record around them is kept, and the bytes are moved to {}.damaged",
                 recovered.damaged_bytes, recovered.damaged_regions, spool_->path());
  // A record that does not decode or would break training (spooled by an older
  // learner that checked less) is set aside, not trained: it must not abort
  // every restart.
  int64_t quarantined = 0;
  for (size_t i = 0; i < recovered.records.size(); ++i) {
    auto m = transport::decode_trajectory(recovered.records[i], kTrajectoryLimits);
    absl::Status valid = m.ok() ? check_trajectory(m->trajectory, trajectory_limits(false)) : m.status();
    if (!valid.ok()) {
      ++quarantined;
      spdlog::warn("learner: spool record {} is not trained on: {}", i, std::string(valid.message()));
      const json ids = m.ok() ? json::array({{m->trajectory.group, m->trajectory.sample}}) : json::array();
      dropped_log_ << json{{"after_step", state_.step}, {"ids", ids}, {"spool_record", i}, {"reason", valid.message()}}.dump()
                   << "\n";
      if (m.ok()) spooled_.insert({m->trajectory.group, m->trajectory.sample});  // a resend is a duplicate
      continue;
    }
    const SampleKey key{m->trajectory.group, m->trajectory.sample};
    spooled_.insert(key);
    for (int64_t v : m->trajectory.versions) max_replayed_version_ = std::max(max_replayed_version_, v);
    if (!trained.count(key)) pending_[key.first][key.second] = std::move(*m);
  }
  dropped_log_.flush();
  invalid_.add(double(quarantined));
  // A compacted spool no longer holds what was trained or dropped: the logs
  // say which ids those were, so their resends are still duplicates.
  spooled_.insert(trained.begin(), trained.end());
  // Partial groups from before the restart: whoever ran them may be gone; if
  // they do not complete in time they are handed out again.
  for (const auto& [group, samples] : pending_)
    if (!group_complete(group)) tasks_source_->adopt_unfinished(group, Clock::now());
  spdlog::info("learner: {} spooled trajectories, {} not yet trained", spooled_.size(),
               spooled_.size() - trained.size());
  return absl::OkStatus();
}

absl::Status Learner::publish() {
  const auto t0 = Clock::now();
  // Workers never get non-finite weights: they would sample garbage and every
  // later step would train on it.
  for (const auto& [name, t] : model_->weights())
    for (float x : t.span_f32())
      if (!std::isfinite(x))
        return absl::DataLossError(absl::StrCat("the weights after step ", state_.step, " are not finite (", name,
                                                " holds ", x, "): not published; the training diverged"));
  std::vector<std::pair<std::string, core::Tensor>> tensors(model_->weights().begin(), model_->weights().end());
  std::string payload = model::safetensors_bytes(tensors);
  weights_id_ = rng_() | 1;
  auto frames = std::make_shared<std::vector<std::string>>();
  const auto chunks = transport::chunk_weights(payload, state_.version, weights_id_);
  for (const auto& c : chunks) frames->push_back(transport::encode_weight_chunk(c));
  chunk_frames_ = std::move(frames);
  if (nccl_) nccl_->publish(state_.version, weights_id_, chunks.front().total_crc32c, std::move(payload));
  version_gauge_.set(double(state_.version));
  sync_seconds_.add(std::chrono::duration<double>(Clock::now() - t0).count());
  return absl::OkStatus();
}

// weights.transport nccl: broadcast from CUDA device 0 when this process sees
// one (workers take devices 1, 2, ...; on a one-device machine they do not ask
// for NCCL); otherwise say why and answer every request with ZeroMQ chunks.
void Learner::start_nccl() {
  if (spec_.weights_transport != WeightsTransport::kNccl) return;
  auto sender = transport::nccl::WeightSender::start(0, std::chrono::seconds(10));
  if (!sender.ok()) {
    spdlog::warn("learner: weights.transport is nccl, but {}; weights go over ZeroMQ",
                 std::string(sender.status().message()));
    return;
  }
  nccl_ = std::move(*sender);
  spdlog::info("learner: weights by NCCL from CUDA device 0");
}

// The sender thread's tallies, into the metrics.
void Learner::count_nccl() {
  if (!nccl_) return;
  const auto now = nccl_->counts();
  if (now.failed > nccl_counted_.failed)
    spdlog::warn("learner: NCCL weight broadcast failed {}; the worker fetches over ZeroMQ", now.last_error);
  nccl_sent_.add(double(now.sent - nccl_counted_.sent));
  nccl_failed_.add(double(now.failed - nccl_counted_.failed));
  sync_bytes_.add(double(now.bytes - nccl_counted_.bytes));
  sync_seconds_.add(now.seconds - nccl_counted_.seconds);
  nccl_counted_ = now;
}

bool Learner::group_complete(int64_t group) const {
  auto it = pending_.find(group);
  return it != pending_.end() && static_cast<int64_t>(it->second.size()) == spec_.group_size;
}

std::vector<int64_t> Learner::complete_groups() const {
  std::vector<int64_t> out;
  for (const auto& [group, samples] : pending_)
    if (static_cast<int64_t>(samples.size()) == spec_.group_size) out.push_back(group);
  return out;
}

void Learner::handle_trajectory(const zmq::message_t& identity, const std::string& worker, std::string_view frame) {
  auto m = transport::decode_trajectory(frame, kTrajectoryLimits);
  if (!m.ok()) return rejects_.reject("trajectories", std::string(m.status().message()));
  transport::AckMessage ack{m->job, m->trajectory.group, m->trajectory.sample, m->attempt, true, ""};
  const SampleKey key{m->trajectory.group, m->trajectory.sample};
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
  } else if (spooled_.count(key) || staged_.count(key)) {  // checked after the content: a bad copy is refused
    duplicates_.inc();
  } else if (!pending_.count(key.first) && partial_groups() >= max_partial_groups()) {
    // Unfinished groups are held in memory until they complete; their number
    // is bounded (a peer sending one sample of many groups once grew the
    // learner by hundreds of MB, and again after each restart).
    ack.accepted = false;
    ack.reason = absl::StrCat("the learner holds ", partial_groups(), " unfinished groups, its limit; group ",
                              key.first, " is not started");
    invalid_.inc();
  } else if (absl::Status s = spool_->append(frame); !s.ok()) {
    spdlog::error("learner: {}", std::string(s.message()));
    drop_staged();  // this one and those appended since the last sync: none acknowledged, all resent
    return;
  } else {
    staged_.emplace(key, std::move(*m));
    acks_.push_back({zmq::message_t(identity.data(), identity.size()), transport::encode_ack(ack), true});
    return;
  }
  acks_.push_back({zmq::message_t(identity.data(), identity.size()), transport::encode_ack(ack), false});
}

// Group ids are (learner start count << 32) + a counter, so the groups this
// learner issued are a known range; a group from an earlier start (before a
// restart) cannot be checked and is taken; one from a later start, or past
// the counter, was never issued.
int64_t Learner::partial_groups() const {
  int64_t n = 0;
  for (const auto& [group, samples] : pending_) n += static_cast<int64_t>(samples.size()) < spec_.group_size;
  for (const auto& [key, m] : staged_) n += !pending_.count(key.first);
  return n;
}

// Four times what the learner has in flight at most (async: eta + 1 batches).
int64_t Learner::max_partial_groups() const { return 4 * (spec_.eta + 1) * spec_.groups_per_step; }

absl::Status Learner::check_issued(const transport::TrajectoryMessage& m, const std::string& worker) const {
  const SampleKey key{m.trajectory.group, m.trajectory.sample};
  if (spooled_.count(key) || staged_.count(key)) return absl::OkStatus();  // a resend (its ack was lost)
  return tasks_source_->check_issued(m.trajectory.group, worker, m.attempt);
}

void Learner::drop_staged() {
  staged_.clear();
  std::erase_if(acks_, [](const PendingAck& a) { return a.needs_sync; });
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
  if (absl::Status s = spool_->sync(); !s.ok()) {
    spdlog::error("learner: {}; the trajectories since the last sync stay unacknowledged and will be resent",
                  std::string(s.message()));
    drop_staged();
  }
  for (auto& [key, m] : staged_) {  // durable now
    spooled_.insert(key);
    received_.inc();
    pending_[key.first][key.second] = std::move(m);
    if (group_complete(key.first)) tasks_source_->finished(key.first);
  }
  staged_.clear();
  spool_bytes_.set(double(spool_->synced_bytes()));
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
  grant.weights_id = weights_id_;
  grant.job_done = state_.step >= spec_.steps;
  if (!grant.job_done) {
    const TaskSource::Load load{.groups_held = static_cast<int64_t>(complete_groups().size() + batch_.size()),
                                .step_running = training_.valid(),
                                .version = state_.version};
    TaskSource::Grant g = tasks_source_->grant(worker, hb->incarnation, hb->want_tasks, load,
                                               [this](int64_t group) { return group_complete(group); }, now);
    tasks_issued_.add(double(g.new_groups));
    tasks_reissued_.add(double(g.reissued));
    grant.tasks = std::move(g.tasks);
  }
  send_routed(tasks_, identity, transport::encode_task_grant(grant));
}

void Learner::handle_weight_request(const zmq::message_t& identity, const std::string& worker, std::string_view frame) {
  auto req = transport::decode_weight_request(frame, kSmallLimits);
  if (!req.ok()) return rejects_.reject("weights", std::string(req.status().message()));
  if (nccl_ && req->accepts_nccl) {
    auto offer = nccl_->offer(worker, req->nccl_session);
    if (offer.ok()) {
      send_routed(weights_, identity, transport::encode_weight_chunk(*offer));
      nccl_offers_.inc();
      return;
    }
    spdlog::warn("learner: no NCCL offer for {} ({}); sending chunks over ZeroMQ", worker,
                 std::string(offer.status().message()));
  }
  const auto t0 = Clock::now();
  for (const std::string& chunk : *chunk_frames_) {
    send_routed_shared(weights_, identity, chunk, chunk_frames_);
    sync_bytes_.add(double(chunk.size()));
  }
  sync_seconds_.add(std::chrono::duration<double>(Clock::now() - t0).count());
}

int64_t Learner::group_lag(int64_t group) const { return rl::group_lag(pending_.at(group), state_.version); }

// With policy drop, complete groups more than eta versions behind are dropped
// (counted, and logged in dropped.jsonl) before a batch is assembled.
void Learner::drop_stale_groups() {
  if (spec_.stale_policy != StalePolicy::kDrop) return;
  json ids = json::array();
  for (int64_t g : complete_groups()) {
    if (group_lag(g) <= spec_.eta) continue;
    for (const auto& [s, m] : pending_[g]) ids.push_back({g, s});
    stale_dropped_.add(double(pending_[g].size()));
    stale_dropped_since_step_ += static_cast<int64_t>(pending_[g].size());
    pending_.erase(g);
  }
  if (ids.empty()) return;
  dropped_log_ << json{{"after_step", state_.step}, {"ids", ids}}.dump() << "\n";
  dropped_log_.flush();
}

// The RL step proper; runs on the training thread while the main thread keeps
// serving the sockets. It touches only the batch (moved out of pending_), the
// model, the optimizer and atomics; state_ is read, not written.
StepResult Learner::compute_step(const Batch& batch) const {
  StepResult r;
  r.t0 = Clock::now();
  r.groups = static_cast<int64_t>(batch.size());
  PolicyBatch pb = make_policy_batch(batch, state_.version, spec_, ref_model_.get());
  stale_downweighted_.add(double(pb.downweighted));
  r.trained_ids = std::move(pb.trained_ids);
  r.reward_sum = pb.reward_sum;
  r.reward_n = pb.reward_n;
  r.tokens = pb.tokens;
  r.lag_sum = pb.lag_sum;
  r.lag_max = pb.lag_max;
  r.lag_n = pb.lag_n;
  const std::vector<learner::PolicySample>& samples = pb.samples;
  std::vector<const learner::PolicySample*> ptrs;
  for (const auto& p : samples) ptrs.push_back(&p);
  model::NamedTensors grads = model_->zero_grads();
  std::vector<std::vector<float>> logprobs;
  // A batch whose groups all have equal rewards has no advantage anywhere:
  // nothing to learn, and an AdamW step on zero gradients would still move the
  // weights by its momentum. Such a step is not applied (the forward still runs
  // for the mismatch figures, and the version still advances).
  r.signal = spec_.objective.kl_coef > 0;
  for (const auto& p : samples) r.signal = r.signal || p.advantage != 0;
  if (!ptrs.empty()) {
    r.stats = learner::policy_accumulate(*model_, spec_.objective, ptrs, grads, &logprobs);
    if (r.signal) {
      r.rep = optimizer_->step(model_->weights(), grads, state_.step);
      model_->weights_changed();
    }
  }
  // The learner's log-probs against the rollout's, on trained tokens only.
  learner::MismatchAccumulator mismatch;
  for (size_t i = 0; i < samples.size(); ++i) {
    std::vector<float> train = logprobs[i], roll = samples[i].rollout_logprobs;
    for (size_t j = 0; j < train.size(); ++j)
      if (!samples[i].loss_mask[j]) train[j] = roll[j] = NAN;
    mismatch.add(roll, train);
  }
  r.mm = mismatch.metrics();
  return r;
}

// Back on the main thread: the step is done; log it, publish the new weights.
absl::Status Learner::finish_step(const StepResult& r) {
  const auto& [stats, rep, mm, signal, trained_ids, reward_sum, reward_n, tokens, lag_n, groups, lag_sum, lag_max, t0] = r;
  ++state_.step;
  ++state_.version;  // a skipped (NaN) step still publishes, so versions and steps stay equal

  trained_log_ << json{{"step", state_.step}, {"ids", trained_ids}}.dump() << "\n";
  trained_log_.flush();
  trained_.add(double(trained_ids.size()));
  steps_.inc();
  const double reward_mean = reward_n ? reward_sum / double(reward_n) : NAN;
  reward_.set(reward_mean);
  loss_.set(stats.loss);
  dlogp_.set(mm.logprob_abs_diff_mean);
  k3_.set(mm.mismatch_k3_kl);
  pearson_.set(mm.prob_pearson);
  staleness_.set(lag_n ? lag_sum / double(lag_n) : 0);
  uint64_t hit = 0, query = 0;
  for (const auto& [name, hb] : heartbeats_) hit += hb.cache_hit_tokens, query += hb.cache_query_tokens;
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_step_).count();
  json row = {{"step", state_.step},
              {"version", state_.version},
              {"reward", reward_mean},
              {"loss", stats.loss},
              {"kl", stats.kl},
              {"clip_fraction", stats.clip_fraction()},
              {"correction_fraction", stats.correction_fraction()},
              {"grad_norm", rep.grad_norm},
              {"lr", rep.lr},
              {"applied", rep.applied},
              {"no_signal", !signal},
              {"trajectories", trained_ids.size()},
              {"stale_dropped", stale_dropped_since_step_},
              {"generated_tokens", tokens},
              {"tokens_per_second", since > 0 ? double(tokens) / since : 0.0},
              {"staleness_mean", lag_n ? lag_sum / double(lag_n) : 0.0},
              {"staleness_max", lag_max},
              {"mismatch", learner::to_json(mm)},
              {"cache_hit_rate", query ? double(hit) / double(query) : 0.0},
              {"train_seconds", std::chrono::duration<double>(now - t0).count()},
              {"step_seconds", since},
              {"elapsed_seconds", std::chrono::duration<double>(now - start_).count()},
              {"duplicates", duplicates_.get()}};
  metrics_log_ << row.dump() << "\n";
  metrics_log_.flush();
  last_step_ = now;
  stale_dropped_since_step_ = 0;
  if (!o_.quiet) {
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const int width = 20, filled = int(width * state_.step / spec_.steps);
    std::fprintf(stderr,
                 "[%s%s] step %lld/%lld  reward %.3f  loss %+.4f  %.0f tok/s  staleness %.2f  |dlogp| %.2e  cache %.0f%%  "
                 "(%.0fs)\n",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(state_.step), static_cast<long long>(spec_.steps), reward_mean, stats.loss,
                 since > 0 ? double(tokens) / since : 0.0, lag_n ? lag_sum / double(lag_n) : 0.0,
                 mm.logprob_abs_diff_mean, query ? 100.0 * double(hit) / double(query) : 0.0, elapsed);
  }
  INTERLACE_RETURN_IF_ERROR(publish());
  if (spec_.checkpoint_every > 0 && state_.step % spec_.checkpoint_every == 0) {
    INTERLACE_RETURN_IF_ERROR(checkpoint());
    if (int64_t(spool_->synced_bytes()) > spec_.spool_compact_bytes) return compact_spool();
  }
  return absl::OkStatus();
}

// Right after a checkpoint, every trajectory a restart would replay is in
// pending_ (trained ones are in trained.jsonl up to the checkpoint, stale ones
// in dropped.jsonl; staged ones were flushed before the step finished): the
// spool keeps those and nothing else. A restart rebuilds its duplicate set
// from the logs as well as the spool.
absl::Status Learner::compact_spool() {
  const uint64_t before = spool_->synced_bytes();
  std::vector<std::string> records;
  for (const auto& [group, samples] : pending_)
    for (const auto& [sample, m] : samples) records.push_back(transport::encode_trajectory(m));
  const std::string path = spool_->path();
  auto rewritten = transport::Spool::rewrite(path, records);
  if (!rewritten.ok()) {  // the old spool is still whole and open: carry on with it
    spdlog::warn("learner: compacting the spool failed: {}", std::string(rewritten.status().message()));
    return absl::OkStatus();
  }
  spool_.emplace(std::move(*rewritten));
  spool_->inject_write_failures(injected_spool_failures());
  spool_compactions_.inc();
  spool_bytes_.set(double(spool_->synced_bytes()));
  spdlog::info("learner: compacted the spool after step {}: {} -> {} bytes ({} untrained trajectories kept)", state_.step,
               before, spool_->synced_bytes(), records.size());
  return absl::OkStatus();
}

absl::Status Learner::checkpoint() {
  const std::string root = run_path(o_.run_dir, "checkpoints");
  const std::string dir = (fs::path(root) / absl::StrCat("step-", state_.step)).string();
  // A restart trusts the run's logs up to the checkpoint (trained.jsonl says
  // which trajectories not to train again): they reach the disk first.
  for (std::ofstream* log : {&trained_log_, &dropped_log_, &metrics_log_}) {
    log->flush();
    if (!*log) return absl::DataLossError(absl::StrCat(o_.run_dir, ": writing the run's logs failed (disk full?)"));
  }
  for (const char* name : {"trained.jsonl", "dropped.jsonl", "metrics.jsonl"})
    INTERLACE_RETURN_IF_ERROR(core::sync_file(run_path(o_.run_dir, name)));
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
  auto http = metrics::HttpServer::start(registry_, o_.endpoints.host, o_.endpoints.learner_metrics);
  if (!http.ok()) {
    spdlog::error("learner: {}", std::string(http.status().message()));
    return 1;
  }
  if (absl::Status s = bind_sockets(); !s.ok()) {
    spdlog::error("learner: {}", std::string(s.message()));
    return 1;
  }
  start_nccl();
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
                      *waited, watchdog.limit_seconds(), state_.step, complete_groups().size(), partial_groups(),
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
    count_nccl();
    if (done_at) {
      if (Clock::now() - *done_at > std::chrono::duration<double>(o_.linger_s)) break;
      continue;
    }
    if (training_.valid()) {
      if (training_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) continue;
      const StepResult result = training_.get();
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
    std::vector<int64_t> ready = complete_groups();
    if (static_cast<int64_t>(ready.size()) >= spec_.groups_per_step) {
      ready.resize(static_cast<size_t>(spec_.groups_per_step));  // the oldest first (ids grow)
      for (int64_t g : ready) {
        batch_[g] = std::move(pending_[g]);
        pending_.erase(g);
      }
      training_ = std::async(std::launch::async, [this] { return compute_step(batch_); });
    }
  }
  return 0;
}

}  // namespace

int run_learner(const LearnerOptions& options) {
  Learner learner(options);
  return learner.run();
}

}  // namespace interlace::rl
