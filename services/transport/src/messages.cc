#include "interlace/transport/messages.h"

#include "proto/heartbeat.capnp.h"
#include "proto/task.capnp.h"
#include "proto/trajectory.capnp.h"
#include "proto/weights.capnp.h"
#include "trajectory_id.h"

namespace interlace::transport {

std::string encode_ack(const AckMessage& m) {
  capnp::MallocMessageBuilder builder;
  auto ack = builder.initRoot<proto::Ack>();
  set_trajectory_id(ack.initId(), m.job, m.group, m.sample, m.attempt);
  ack.setAccepted(m.accepted);
  ack.setReason(m.reason);
  return flat_frame(builder);
}

absl::StatusOr<AckMessage> decode_ack(std::string_view frame, const FrameLimits& limits) {
  AckMessage m;
  absl::Status s = read_frame<proto::Ack>(frame, limits, "ack", [&](proto::Ack::Reader ack) {
    auto id = ack.getId();
    m.job = id.getJob();
    m.group = static_cast<int64_t>(id.getGroup());
    m.sample = id.getSample();
    m.attempt = id.getAttempt();
    m.accepted = ack.getAccepted();
    m.reason = ack.getReason();
  });
  if (!s.ok()) return s;
  return m;
}

std::string encode_task_grant(const TaskGrantMessage& m) {
  capnp::MallocMessageBuilder builder;
  auto grant = builder.initRoot<proto::TaskGrant>();
  auto tasks = grant.initTasks(static_cast<unsigned>(m.tasks.size()));
  for (unsigned i = 0; i < m.tasks.size(); ++i) {
    const TaskMessage& t = m.tasks[i];
    auto out = tasks[i];
    out.setJob(t.job);
    out.setGroup(static_cast<uint64_t>(t.group));
    out.setEnv(t.env);
    out.setTaskSeed(t.task_seed);
    out.setGroupSize(t.group_size);
    out.setAttempt(t.attempt);
    out.setWeightsVersion(t.weights_version);
    auto s = out.initSampling();
    s.setTemperature(t.temperature);
    s.setTopP(t.top_p);
    s.setTopK(t.top_k);
    s.setSeed(t.seed);
    s.setMaxTurns(t.max_turns);
    s.setMaxTurnTokens(t.max_turn_tokens);
    s.setMaxEpisodeTokens(t.max_episode_tokens);
  }
  grant.setWeightsVersion(m.weights_version);
  grant.setWeightsId(m.weights_id);
  grant.setJobDone(m.job_done);
  return flat_frame(builder);
}

absl::StatusOr<TaskGrantMessage> decode_task_grant(std::string_view frame, const FrameLimits& limits) {
  TaskGrantMessage m;
  absl::Status s = read_frame<proto::TaskGrant>(frame, limits, "task grant", [&](proto::TaskGrant::Reader grant) {
    for (auto t : grant.getTasks()) {
      TaskMessage task;
      task.job = t.getJob();
      task.group = static_cast<int64_t>(t.getGroup());
      task.env = t.getEnv();
      task.task_seed = t.getTaskSeed();
      task.group_size = t.getGroupSize();
      task.attempt = t.getAttempt();
      task.weights_version = t.getWeightsVersion();
      auto s = t.getSampling();
      task.temperature = s.getTemperature();
      task.top_p = s.getTopP();
      task.top_k = s.getTopK();
      task.seed = s.getSeed();
      task.max_turns = s.getMaxTurns();
      task.max_turn_tokens = s.getMaxTurnTokens();
      task.max_episode_tokens = s.getMaxEpisodeTokens();
      m.tasks.push_back(std::move(task));
    }
    m.weights_version = grant.getWeightsVersion();
    m.weights_id = grant.getWeightsId();
    m.job_done = grant.getJobDone();
  });
  if (!s.ok()) return s;
  for (const TaskMessage& t : m.tasks)
    if (t.group_size == 0 || t.group_size > 4096)
      return absl::InvalidArgumentError(absl::StrCat("task grant: group ", t.group, " has group size ", t.group_size,
                                                     " (allowed 1..4096)"));
  return m;
}

std::string encode_heartbeat(const HeartbeatMessage& m) {
  capnp::MallocMessageBuilder builder;
  auto h = builder.initRoot<proto::Heartbeat>();
  h.setService(m.service);
  h.setUnixMillis(m.unix_millis);
  h.setWeightsVersion(m.weights_version);
  h.setRunning(m.running);
  h.setWaiting(m.waiting);
  h.setCacheHitTokens(m.cache_hit_tokens);
  h.setCacheQueryTokens(m.cache_query_tokens);
  h.setCacheBytes(m.cache_bytes);
  h.setIncarnation(m.incarnation);
  h.setWantTasks(m.want_tasks);
  h.setUnacked(m.unacked);
  h.setWeightsId(m.weights_id);
  return flat_frame(builder);
}

absl::StatusOr<HeartbeatMessage> decode_heartbeat(std::string_view frame, const FrameLimits& limits) {
  HeartbeatMessage m;
  absl::Status s = read_frame<proto::Heartbeat>(frame, limits, "heartbeat", [&](proto::Heartbeat::Reader h) {
    m.service = h.getService();
    m.unix_millis = h.getUnixMillis();
    m.weights_version = h.getWeightsVersion();
    m.running = h.getRunning();
    m.waiting = h.getWaiting();
    m.cache_hit_tokens = h.getCacheHitTokens();
    m.cache_query_tokens = h.getCacheQueryTokens();
    m.cache_bytes = h.getCacheBytes();
    m.incarnation = h.getIncarnation();
    m.want_tasks = h.getWantTasks();
    m.unacked = h.getUnacked();
    m.weights_id = h.getWeightsId();
  });
  if (!s.ok()) return s;
  if (m.service.empty() || m.service.size() > 128)
    return absl::InvalidArgumentError("heartbeat: service name must be 1..128 characters");
  return m;
}

std::string encode_weight_request(const WeightRequestMessage& m) {
  capnp::MallocMessageBuilder builder;
  auto r = builder.initRoot<proto::WeightRequest>();
  r.setWorker(m.worker);
  r.setHaveWeightsId(m.have_weights_id);
  r.setAcceptsNccl(m.accepts_nccl);
  r.setNcclSession(m.nccl_session);
  r.setOnlyIfNewer(m.only_if_newer);
  return flat_frame(builder);
}

absl::StatusOr<WeightRequestMessage> decode_weight_request(std::string_view frame, const FrameLimits& limits) {
  WeightRequestMessage m;
  absl::Status s = read_frame<proto::WeightRequest>(frame, limits, "weight request", [&](proto::WeightRequest::Reader r) {
    m.worker = r.getWorker();
    m.have_weights_id = r.getHaveWeightsId();
    m.accepts_nccl = r.getAcceptsNccl();
    m.nccl_session = r.getNcclSession();
    m.only_if_newer = r.getOnlyIfNewer();
  });
  if (!s.ok()) return s;
  return m;
}

std::string encode_weight_chunk(const WeightChunkMessage& m) {
  capnp::MallocMessageBuilder builder;
  auto c = builder.initRoot<proto::WeightChunk>();
  c.setVersion(m.version);
  c.setWeightsId(m.weights_id);
  c.setIndex(m.index);
  c.setCount(m.count);
  c.setTotalBytes(m.total_bytes);
  c.setOffset(m.offset);
  c.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(m.data.data()), m.data.size()));
  c.setChunkCrc32c(m.chunk_crc32c);
  c.setTotalCrc32c(m.total_crc32c);
  if (m.by_nccl()) {
    auto n = c.initNccl();
    n.setSession(m.nccl_session);
    n.setUniqueId(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(m.nccl_unique_id.data()), m.nccl_unique_id.size()));
  }
  return flat_frame(builder);
}

absl::Status read_weight_chunk(std::string_view frame, const FrameLimits& limits,
                               const std::function<absl::Status(const WeightChunkFields&, std::string_view)>& on_chunk) {
  absl::Status result;
  absl::Status s = read_frame<proto::WeightChunk>(frame, limits, "weight chunk", [&](proto::WeightChunk::Reader c) {
    WeightChunkFields f;
    f.version = c.getVersion();
    f.weights_id = c.getWeightsId();
    f.index = c.getIndex();
    f.count = c.getCount();
    f.total_bytes = c.getTotalBytes();
    f.offset = c.getOffset();
    f.chunk_crc32c = c.getChunkCrc32c();
    f.total_crc32c = c.getTotalCrc32c();
    if (c.hasNccl()) {
      auto n = c.getNccl();
      f.nccl_session = n.getSession();
      auto id = n.getUniqueId();
      f.nccl_unique_id.assign(reinterpret_cast<const char*>(id.begin()), id.size());
    }
    auto d = c.getData();
    result = on_chunk(f, std::string_view(reinterpret_cast<const char*>(d.begin()), d.size()));
  });
  return s.ok() ? result : s;
}

}  // namespace interlace::transport
