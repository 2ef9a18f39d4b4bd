#include "interlace/rl/worker_service.h"

#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "absl/strings/str_cat.h"
#include "interlace/cache/prefix_cache.h"
#include "interlace/core/file_util.h"
#include "interlace/metrics/registry.h"
#include "interlace/rl/engine_metrics.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/config.h"
#include "interlace/model/model.h"
#include "interlace/model/safetensors.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rl/service_util.h"
#include "interlace/rollout/rollout_stack.h"
#include "interlace/rollout/agent.h"
#include "interlace/rollout/engine.h"
#include "interlace/rollout/environment.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/messages.h"
#include "interlace/transport/trajectory_codec.h"
#include "interlace/transport/weight_sync.h"
#include "interlace/transport/nccl_weights.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace interlace::rl {
namespace {

// One help text for every reason of interlace_cache_evictions_total.
constexpr char kEvictionsHelp[] =
    "prefix-cache entries evicted, by reason (the byte budget, a count cap, an old weights version's tree)";

using Clock = std::chrono::steady_clock;
constexpr transport::FrameLimits kAckLimits{.max_bytes = size_t{64} << 10};
constexpr transport::FrameLimits kGrantLimits{.max_bytes = size_t{16} << 20};

struct Unacked {
  std::string frame;
  Clock::time_point sent;
};

class Worker {
 public:
  explicit Worker(const WorkerOptions& o)
      : o_(o),
        spec_(o.spec),
        name_(o.name.empty() ? absl::StrCat("worker-", o.index) : o.name),
        incarnation_(std::random_device{}() | (uint64_t{std::random_device{}()} << 32) | 1),
        sent_(registry_.counter("interlace_trajectories_sent_total", "trajectories sent (first time)")),
        resent_(registry_.counter("interlace_trajectories_resent_total", "trajectories sent again, not acknowledged in time")),
        acked_(registry_.counter("interlace_trajectories_acked_total", "trajectories acknowledged by the learner")),
        refused_(registry_.counter("interlace_trajectories_refused_total", "trajectories the learner refused for good")),
        generated_(registry_.counter("interlace_rollout_generated_tokens_total", "tokens generated")),
        sync_bytes_(registry_.counter("interlace_weight_sync_bytes_total", "weight payload bytes received and applied")),
        sync_seconds_(registry_.counter("interlace_weight_sync_seconds_total", "seconds spent fetching weights")),
        sync_failed_(registry_.counter("interlace_weight_sync_failures_total",
                                       "weight fetches rejected (corrupt or partial); old weights kept")),
        chunks_rejected_(registry_.counter("interlace_weight_chunks_rejected_total", "weight chunks that failed a check")),
        // Only builds with NCCL export its counters (elsewhere they would read as "NCCL never worked").
        nccl_received_(nccl_registry().counter("interlace_weight_sync_nccl_total", "weight updates that came by NCCL")),
        nccl_failed_(nccl_registry().counter("interlace_weight_sync_nccl_failures_total",
                                       "NCCL weight transfers that failed; the update was then fetched over ZeroMQ")),
        version_gauge_(registry_.gauge("interlace_weights_version", "weights version in use")),
        unacked_gauge_(registry_.gauge("interlace_trajectories_unacked", "trajectories sent, not yet acknowledged")),
        // Cumulative over the worker's life: counters (rate() copes with a restart's reset).
        cache_hit_(registry_.counter("interlace_cache_hit_tokens_total", "prompt tokens served from the prefix cache")),
        cache_query_(registry_.counter("interlace_cache_query_tokens_total", "prompt tokens looked up in the prefix cache")),
        cache_bytes_(registry_.gauge("interlace_cache_bytes", "bytes the prefix cache holds (KV blocks and states)")),
        evicted_bytes_(registry_.counter("interlace_cache_evictions_total", kEvictionsHelp, {{"reason", "byte_budget"}})),
        evicted_count_(registry_.counter("interlace_cache_evictions_total", kEvictionsHelp, {{"reason", "count_cap"}})),
        dropped_version_(registry_.counter("interlace_cache_evictions_total", kEvictionsHelp, {{"reason", "old_version"}})),
        rejects_(registry_, name_, {"acks", "grants"}) {
    metrics::register_build_info(registry_, transport::nccl::built_with_nccl());
  }

  int run();

 private:
  void pump();
  absl::Status connect_sockets();
  void follow_moved_learner();
  void send_heartbeat();
  bool ensure_weights();
  void start_nccl();
  void send_trajectory(const rollout::Trajectory& t, const transport::TaskMessage& task);
  // The environment a task names, made once; null (and logged) if it cannot be.
  rollout::Environment* environment(const std::string& spec);
  std::map<std::string, std::unique_ptr<rollout::Environment>> environments_;

  WorkerOptions o_;
  JobSpec spec_;
  std::string name_;
  uint64_t incarnation_;
  metrics::Registry registry_;
  metrics::Registry unexported_;  // values no /metrics shows (NCCL's, in builds without it)
  metrics::Registry& nccl_registry() { return transport::nccl::built_with_nccl() ? registry_ : unexported_; }
  metrics::Value &sent_, &resent_, &acked_, &refused_, &generated_, &sync_bytes_, &sync_seconds_, &sync_failed_,
      &chunks_rejected_, &nccl_received_, &nccl_failed_, &version_gauge_, &unacked_gauge_, &cache_hit_, &cache_query_,
      &cache_bytes_, &evicted_bytes_, &evicted_count_, &dropped_version_;
  FrameRejects rejects_;
  EngineMetrics engine_metrics_{registry_};
  // What the prefix cache holds by layer kind, and how full its byte budget is.
  // (Hits are not split by kind: a hit restores the softmax layers' KV and
  // the lightning layers' state for the same tokens.)
  metrics::Value& cache_kv_bytes_ = registry_.gauge("interlace_cache_held_bytes",
                                                    "bytes the prefix cache holds, by layer kind",
                                                    {{"kind", "softmax_kv"}});
  metrics::Value& cache_state_bytes_ = registry_.gauge("interlace_cache_held_bytes",
                                                       "bytes the prefix cache holds, by layer kind",
                                                       {{"kind", "lightning_state"}});
  metrics::Value& cache_usage_ = registry_.gauge("interlace_cache_usage_ratio",
                                                 "bytes the prefix cache holds over its byte budget (0..1)");
  prometheus::Histogram& first_token_seconds_ = registry_.histogram(
      "interlace_time_to_first_token_seconds",
      "from a request's submission to the engine to its first token (queueing and prefill; one request per turn)",
      metrics::seconds_buckets());
  prometheus::Histogram& inter_token_seconds_ = registry_.histogram(
      "interlace_inter_token_latency_seconds", "between a request's consecutive tokens (decode steps)",
      metrics::seconds_buckets());
  prometheus::Histogram& episode_seconds_ = registry_.histogram(
      "interlace_episode_duration_seconds",
      "time from an episode's batch starting to its trajectory being sent (every turn and tool call)",
      metrics::seconds_buckets());

  zmq::context_t ctx_{1};
  zmq::socket_t traj_, tasks_, weights_;
  std::optional<transport::CurveKeyPair> keys_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::optional<model::ModelConfig> config_;
  model::PrecisionProfile precision_;
  rollout::SpeculativeConfig speculate_;
  std::shared_ptr<model::Model> model_;
  rollout::RolloutStack stack_;  // built once the first weights are in
  std::string weight_buffer_;
  static constexpr int kNcclFailuresBeforeGivingUp = 3;
  std::unique_ptr<transport::nccl::WeightReceiver> nccl_;  // weights.transport nccl, when a device is there
  int nccl_failures_in_a_row_ = 0;

  std::map<std::string, Unacked> unacked_;  // by trajectory key
  std::deque<transport::TaskMessage> queued_;
  int64_t running_groups_ = 0;
  int64_t version_ = -1;
  uint64_t weights_id_ = 0, latest_weights_id_ = 0;
  int64_t latest_version_ = 0;
  bool job_done_ = false;
  Clock::time_point last_heartbeat_{}, last_fetch_failure_{}, last_load_write_{};
  Clock::time_point last_grant_ = Clock::now(), last_endpoints_check_{};
};

// CURVE clients pinned to the learner's key, connected to the ports in
// o_.endpoints. The learner knows this worker by the name of its key
// (RUN/keys/clients/worker-N.pub), never by anything the worker sends.
absl::Status Worker::connect_sockets() {
  const std::string keys = run_path(o_.run_dir, "keys");
  if (!keys_) {
    auto pair = transport::load_or_make_curve_key_pair(transport::client_keys_dir(keys), name_);
    if (!pair.ok()) return pair.status();
    keys_ = *pair;
  }
  auto server = transport::read_curve_key(run_path(keys, "server.pub"));
  if (!server.ok()) return server.status();
  traj_ = make_socket(ctx_, zmq::socket_type::dealer, int64_t{1} << 20);
  tasks_ = make_socket(ctx_, zmq::socket_type::dealer, int64_t{32} << 20);
  weights_ = make_socket(ctx_, zmq::socket_type::dealer, int64_t{64} << 20);
  for (zmq::socket_t* s : {&traj_, &tasks_, &weights_}) transport::make_curve_client(*s, *server, *keys_);
  traj_.connect(o_.endpoints.tcp(o_.endpoints.trajectories));
  tasks_.connect(o_.endpoints.tcp(o_.endpoints.tasks));
  weights_.connect(o_.endpoints.tcp(o_.endpoints.weights));
  return absl::OkStatus();
}

// When the learner has not answered for a while, connect again, to the
// address and ports endpoints.json names now: a restarted learner that found
// its ports taken binds others and writes them there (a pool learner
// restarted in another pod, another address), and libzmq does not retry a
// connection the learner refused (a key it did not know yet).
void Worker::follow_moved_learner() {
  const auto now = Clock::now();
  if (now - last_grant_ < std::chrono::seconds(10) || now - last_endpoints_check_ < std::chrono::seconds(10)) return;
  last_endpoints_check_ = now;
  auto e = read_endpoints(o_.run_dir);
  if (!e.ok() || e->trajectories <= 0) return;
  spdlog::info("{}: no answer from the learner for {:.0f} s; connecting again to {} ports {}/{}/{}", name_,
               std::chrono::duration<double>(now - last_grant_).count(), e->host, e->trajectories, e->tasks, e->weights);
  o_.endpoints.host = e->host;
  o_.endpoints.trajectories = e->trajectories;
  o_.endpoints.tasks = e->tasks;
  o_.endpoints.weights = e->weights;
  if (absl::Status s = connect_sockets(); !s.ok()) spdlog::error("{}: {}", name_, std::string(s.message()));
  for (auto& [key, u] : unacked_) u.sent = Clock::time_point{};  // resend on the new connection
}

void Worker::send_heartbeat() {
  transport::HeartbeatMessage hb;
  hb.service = name_;
  hb.unix_millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  hb.weights_version = version_;
  hb.weights_id = weights_id_;
  hb.incarnation = incarnation_;
  hb.unacked = static_cast<uint32_t>(unacked_.size());
  if (stack_.engine) {  // what a router or the controller can balance on
    hb.running = static_cast<uint32_t>(stack_.engine->running());
    hb.waiting = static_cast<uint32_t>(stack_.engine->waiting());
    engine_metrics_.update(*stack_.engine);
  }
  const int64_t target = std::max<int64_t>(1, spec_.max_running / std::max<int64_t>(1, spec_.group_size));
  const int64_t want = target - static_cast<int64_t>(queued_.size()) - running_groups_;
  hb.want_tasks = unacked_.size() < static_cast<size_t>(spec_.max_in_flight) && want > 0 ? static_cast<uint32_t>(want) : 0;
  if (stack_.cache) {
    const cache::CacheCounters& c = stack_.cache->counters();
    hb.cache_hit_tokens = static_cast<uint64_t>(c.hit_tokens);
    hb.cache_query_tokens = static_cast<uint64_t>(c.query_tokens);
    hb.cache_bytes = static_cast<uint64_t>(c.kv_bytes + c.state_bytes);
    cache_hit_.set(double(c.hit_tokens));
    cache_query_.set(double(c.query_tokens));
    cache_bytes_.set(double(c.bytes()));
    cache_kv_bytes_.set(double(c.kv_bytes));
    cache_state_bytes_.set(double(c.state_bytes));
    if (stack_.cache->max_bytes() > 0) cache_usage_.set(double(c.bytes()) / double(stack_.cache->max_bytes()));
    evicted_bytes_.set(double(c.evicted_for_bytes));
    evicted_count_.set(double(c.evicted_for_count));
    dropped_version_.set(double(c.dropped_old_version));
  }
  tasks_.send(zmq::buffer(transport::encode_heartbeat(hb)), zmq::send_flags::dontwait);
  last_heartbeat_ = Clock::now();
  if (!o_.load_file.empty() && last_heartbeat_ - last_load_write_ > std::chrono::seconds(1)) {
    last_load_write_ = last_heartbeat_;
    const double usage = stack_.cache && stack_.cache->max_bytes() > 0
                             ? double(stack_.cache->counters().bytes()) / double(stack_.cache->max_bytes())
                             : -1.0;
    (void)core::write_file(o_.load_file, nlohmann::json{{"running", hb.running}, {"waiting", hb.waiting},
                                                        {"cache_usage", usage}}.dump());
  }
}

void Worker::pump() {
  zmq::message_t msg;
  while (traj_.recv(msg, zmq::recv_flags::dontwait)) {
    auto ack = transport::decode_ack(std::string_view(static_cast<const char*>(msg.data()), msg.size()), kAckLimits);
    if (!ack.ok()) {
      rejects_.reject("acks", std::string(ack.status().message()));
      continue;
    }
    const std::string key = transport::trajectory_key(ack->job, ack->group, ack->sample, ack->attempt);
    if (unacked_.erase(key)) {
      acked_.inc();
      if (!ack->accepted) {
        refused_.inc();
        spdlog::warn("{}: the learner refused {}: {}", name_, key, ack->reason);
      }
    }
  }
  const auto now = Clock::now();
  const auto resend_after = std::chrono::duration<double>(spec_.resend_after_s);
  for (auto& [key, u] : unacked_)
    if (now - u.sent > resend_after) {
      traj_.send(zmq::buffer(u.frame), zmq::send_flags::dontwait);
      u.sent = now;
      resent_.inc();
    }
  unacked_gauge_.set(double(unacked_.size()));
  while (tasks_.recv(msg, zmq::recv_flags::dontwait)) {
    auto grant =
        transport::decode_task_grant(std::string_view(static_cast<const char*>(msg.data()), msg.size()), kGrantLimits);
    if (!grant.ok()) {
      rejects_.reject("grants", std::string(grant.status().message()));
      continue;
    }
    last_grant_ = now;
    latest_weights_id_ = grant->weights_id;
    latest_version_ = grant->weights_version;
    job_done_ = job_done_ || grant->job_done;
    for (auto& t : grant->tasks) queued_.push_back(std::move(t));
  }
  if (now - last_heartbeat_ > std::chrono::milliseconds(200)) send_heartbeat();
  follow_moved_learner();
}

// Fetches the newest publication if ours is older; false if we have none yet.
bool Worker::ensure_weights() {
  if (latest_weights_id_ == 0 || latest_weights_id_ == weights_id_) return model_ != nullptr;
  if (Clock::now() - last_fetch_failure_ < std::chrono::milliseconds(200)) return model_ != nullptr;
  const auto t0 = Clock::now();
  uint64_t rejected = 0;
  transport::WeightRequestMessage request{name_, weights_id_};
  transport::NcclReceive by_nccl;
  if (nccl_) {
    request.accepts_nccl = true;
    request.nccl_session = nccl_->session();
    by_nccl = [this](const transport::WeightChunkFields& offer) { return nccl_->receive(offer); };
  }
  // 5 s: a request lost to a learner restart is retried soon.
  auto payload =
      transport::fetch_weights(weights_, request, std::chrono::seconds(5), &rejected, &weight_buffer_, by_nccl);
  if (!payload.ok() && request.accepts_nccl) {
    // Whatever NCCL failed at (a peer gone, a timeout, bytes that fail the
    // checksum), the group is dropped and this update comes over ZeroMQ; after
    // a few failures in a row NCCL is not asked for again.
    nccl_failed_.inc();
    nccl_->drop();
    const bool give_up = ++nccl_failures_in_a_row_ >= kNcclFailuresBeforeGivingUp;
    spdlog::warn("{}: weights by NCCL failed ({}); fetching them over ZeroMQ{}", name_,
                 std::string(payload.status().message()),
                 give_up ? absl::StrCat(", and from now on (", kNcclFailuresBeforeGivingUp, " failures in a row)") : "");
    if (give_up) nccl_.reset();
    request.accepts_nccl = false;
    payload = transport::fetch_weights(weights_, request, std::chrono::seconds(5), &rejected, &weight_buffer_);
  } else if (payload.ok() && payload->by_nccl) {
    nccl_received_.inc();
    nccl_failures_in_a_row_ = 0;
  }
  chunks_rejected_.add(double(rejected));
  absl::StatusOr<std::unique_ptr<model::Model>> m = absl::UnknownError("");
  if (payload.ok()) {
    auto tensors = model::parse_safetensors_bytes(payload->bytes, "weights from the learner");
    m = tensors.ok() ? model::Model::from_tensors(*config_, *tensors, precision_) : tensors.status();
  }
  if (!payload.ok() || !m.ok()) {
    sync_failed_.inc();
    last_fetch_failure_ = Clock::now();
    spdlog::warn("{}: weights not applied, keeping version {}: {}", name_, version_,
                 payload.ok() ? std::string(m.status().message()) : std::string(payload.status().message()));
    return model_ != nullptr;
  }
  model_ = std::shared_ptr<model::Model>(std::move(*m));
  weight_buffer_ = std::move(payload->bytes);  // its memory takes the next update
  version_ = payload->version;
  weights_id_ = payload->weights_id;
  if (stack_.engine) stack_.engine->update_weights(model_, version_);
  sync_bytes_.add(double(payload->bytes.size()));
  sync_seconds_.add(std::chrono::duration<double>(Clock::now() - t0).count());
  version_gauge_.set(double(version_));
  return true;
}

// weights.transport nccl: take updates by NCCL on one of the CUDA devices the
// learner does not use (it broadcasts from device 0; workers share devices
// 1, 2, ... in turn); otherwise say why and fetch over ZeroMQ. The services run
// on one machine (`interlace run`), so device numbers are the same for all.
void Worker::start_nccl() {
  if (spec_.weights_transport != WeightsTransport::kNccl) return;
  auto devices = transport::nccl::device_count();
  if (devices.ok() && *devices < 2)
    devices = absl::UnavailableError(
        "this machine has one CUDA device, the learner's, and NCCL does not support two ranks of a group on one device");
  if (!devices.ok()) {
    spdlog::warn("{}: weights.transport is nccl, but {}; weights come over ZeroMQ", name_,
                 std::string(devices.status().message()));
    return;
  }
  const int device = 1 + o_.index % (*devices - 1);
  nccl_ = std::make_unique<transport::nccl::WeightReceiver>(device, std::chrono::seconds(10));
  spdlog::info("{}: weights by NCCL on CUDA device {}", name_, device);
}

rollout::Environment* Worker::environment(const std::string& spec) {
  auto it = environments_.find(spec);
  if (it != environments_.end()) return it->second.get();
  auto env = rollout::make_environment(spec);
  if (!env.ok()) {
    spdlog::error("{}: a task names environment '{}': {}; skipping it", name_, spec, std::string(env.status().message()));
    return nullptr;
  }
  return (environments_[spec] = std::move(*env)).get();
}

void Worker::send_trajectory(const rollout::Trajectory& t, const transport::TaskMessage& task) {
  transport::TrajectoryMessage m;
  m.job = task.job;
  m.env = task.env;
  m.worker = name_;
  m.attempt = task.attempt;
  m.trajectory = t;
  const std::string frame = transport::encode_trajectory(m);
  traj_.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  unacked_[transport::trajectory_key(m)] = {frame, Clock::now()};
  sent_.inc();
  generated_.add(double(t.generated_tokens()));
  // Bounded in flight: wait for acks before generating more.
  while (unacked_.size() >= static_cast<size_t>(spec_.max_in_flight) && !job_done_) {
    zmq::pollitem_t item{static_cast<void*>(traj_), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(50));
    pump();
  }
}

int Worker::run() {
  auto tok = model::load_tokenizer(o_.endpoints.initial_model);
  auto config = model::load_config(o_.endpoints.initial_model);
  auto precision = model::parse_precision(spec_.rollout_precision);
  auto env = rollout::make_environment(spec_.env);
  auto speculate = rollout::parse_speculate(spec_.speculate);
  for (const absl::Status& s : {tok.status(), config.status(), precision.status(), env.status(), speculate.status()})
    if (!s.ok()) {
      spdlog::error("{}: {}", name_, std::string(s.message()));
      return 1;
    }
  tokenizer_ = std::move(*tok);
  config_ = *config;
  precision_ = *precision;
  speculate_ = *speculate;
  environments_[spec_.env] = std::move(*env);
  auto tmpl = model::ChatTemplate::create(*tokenizer_);
  if (!tmpl.ok()) {
    spdlog::error("{}: {}", name_, std::string(tmpl.status().message()));
    return 1;
  }
  std::unique_ptr<metrics::MetricsExposer> http;
  if (o_.index < static_cast<int>(o_.endpoints.worker_metrics.size())) {
    auto h = metrics::MetricsExposer::start(registry_, o_.endpoints.host, o_.endpoints.worker_metrics[o_.index]);
    if (!h.ok()) {
      spdlog::error("{}: {}", name_, std::string(h.status().message()));
      return 1;
    }
    http = std::move(*h);
  }
  // The learner binds its ports when it starts and writes them to endpoints.json.
  for (bool said = false; o_.endpoints.trajectories <= 0;) {
    if (!said && !o_.quiet) spdlog::info("{}: waiting for the learner to bind its ports", name_);
    said = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (auto e = read_endpoints(o_.run_dir); e.ok()) o_.endpoints = *e;
  }
  if (absl::Status s = connect_sockets(); !s.ok()) {
    spdlog::error("{}: {}", name_, std::string(s.message()));
    return 1;
  }

  start_nccl();
  // The first weights come from the learner too (they may be a resumed run's).
  while (!job_done_ && !ensure_weights()) {
    pump();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!model_) return 0;  // the job ended before we had weights
  // A draft model is the job's fixed file (it does not follow the weights).
  if (absl::Status s = rollout::load_draft_model(speculate_, *model_, precision_); !s.ok()) {
    spdlog::error("{}: {}", name_, std::string(s.message()));
    return 1;
  }
  stack_ = rollout::make_rollout_stack(
      model_, *tokenizer_, *tmpl,
      {.version = version_,
       .max_running = spec_.max_running,
       // The default budget is the machine's, shared by the job's local workers.
       .cache = spec_.cache ? std::optional(cache::CacheConfig{.max_bytes = spec_.cache_bytes > 0
                                                                               ? spec_.cache_bytes
                                                                               : cache::default_cache_bytes() /
                                                                                     std::max<int64_t>(1, spec_.workers),
                                                               .max_kv_blocks = spec_.cache_blocks,
                                                               .max_states = spec_.cache_states,
                                                               .state_dtype = precision_.state})
                            : std::nullopt,
       .limits = {.max_turns = spec_.max_turns, .max_turn_tokens = spec_.max_turn_tokens,
                  .max_episode_tokens = spec_.max_episode_tokens},
       .speculate = speculate_});
  stack_.engine->set_latency_hooks({.first_token = [this](double s) { first_token_seconds_.Observe(s); },
                                    .inter_token = [this](double s) { inter_token_seconds_.Observe(s); }});
  while (!job_done_) {
    pump();
    ensure_weights();
    // Tasks that need newer weights than ours wait until we have them.
    std::vector<transport::TaskMessage> batch;
    for (auto it = queued_.begin(); it != queued_.end();) {
      if (it->weights_version <= version_) {
        batch.push_back(std::move(*it));
        it = queued_.erase(it);
      } else {
        ++it;
      }
    }
    if (batch.empty()) {
      zmq::pollitem_t item{static_cast<void*>(tasks_), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(50));
      continue;
    }
    // Each task runs in the environment it names, under its own limits (the
    // task is the contract: docs/wire-protocol.md), not the job spec's.
    std::vector<rollout::EpisodeSpec> episodes;
    for (size_t i = 0; i < batch.size(); ++i) {
      const transport::TaskMessage& t = batch[i];
      rollout::Environment* task_env = environment(t.env);
      if (!task_env) continue;  // said why; the group times out and is handed out again
      rollout::SamplingParams sampling;
      sampling.temperature = t.temperature;
      sampling.top_p = t.top_p;
      sampling.top_k = t.top_k;
      const rollout::AgentLimits limits{.max_turns = std::max<int64_t>(1, t.max_turns),
                                        .max_turn_tokens = std::max<int64_t>(1, t.max_turn_tokens),
                                        .max_episode_tokens = std::max<int64_t>(2, t.max_episode_tokens)};
      // t.seed is group_seed(task_seed, attempt) (the task source's).
      for (auto& e : rollout::group_episodes(*task_env, t.task_seed, t.group, t.group_size, t.seed, sampling, limits))
        episodes.push_back(std::move(e));
    }
    std::map<int64_t, size_t> by_group;
    for (size_t i = 0; i < batch.size(); ++i) by_group[batch[i].group] = i;
    running_groups_ = static_cast<int64_t>(batch.size());
    const auto batch_start = Clock::now();
    stack_.loop->run(
        std::move(episodes),
        [&](const rollout::Trajectory& t) {
          episode_seconds_.Observe(std::chrono::duration<double>(Clock::now() - batch_start).count());
          send_trajectory(t, batch[by_group.at(t.group)]);
        },
        [&] {
          pump();
          ensure_weights();  // a swap takes effect at the engine's next step
        });
    running_groups_ = 0;
  }
  // Job done: give the last acks a moment to arrive (the learner no longer needs them).
  const auto until = Clock::now() + std::chrono::seconds(1);
  while (!unacked_.empty() && Clock::now() < until) {
    pump();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!o_.quiet)
    spdlog::info("{}: job done; {} trajectories sent, {} resent; weights version {}{}", name_, sent_.get(),
                 resent_.get(), version_,
                 stack_.cache ? absl::StrCat("; prefix cache evicted ", stack_.cache->counters().state_evictions,
                                             " states and ", stack_.cache->counters().kv_evictions, " KV blocks")
                        : "");
  if (stack_.engine) engine_metrics_.update(*stack_.engine);
  save_final_metrics(registry_, o_.run_dir, name_);
  stack_ = {};  // its agent loop refers to this function's chat template
  return 0;
}

}  // namespace

int run_worker(const WorkerOptions& options) {
  Worker worker(options);
  return worker.run();
}

}  // namespace interlace::rl
