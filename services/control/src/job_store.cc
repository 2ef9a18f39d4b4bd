#include "interlace/control/job_store.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "script_util.h"

namespace interlace::control {

namespace detail {
namespace {

// Server time in milliseconds (scripts replicate their effects, so reading the
// clock in a script is allowed).
constexpr const char* kNowLua = R"(
local function now_ms()
  local t = redis.call('TIME')
  return tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function event(prefix, id, typ, msg)
  redis.call('XADD', prefix .. ':events:' .. id, 'MAXLEN', '~', ARGV_MAX_EVENTS, '*', 'type', typ, 'message', msg)
end
)";

}  // namespace

std::string with_prelude(const std::string& body) {
  std::string s = kNowLua;
  const std::string marker = "ARGV_MAX_EVENTS";
  s.replace(s.find(marker), marker.size(), std::to_string(kMaxEventsKept));
  return s + body;
}

absl::Status script_error(const absl::Status& s) {
  const std::string m(s.message());
  if (const size_t at = m.find("NOTFOUND "); at != std::string::npos) return absl::NotFoundError(m.substr(at + 9));
  if (const size_t at = m.find("STATE "); at != std::string::npos) return absl::FailedPreconditionError(m.substr(at + 6));
  return s;
}

}  // namespace detail

namespace {

using detail::script_error;
using detail::with_prelude;

// ARGV: prefix kind name spec request_id
const std::string& submit_script() {
  static const std::string s = with_prelude(R"(
local prefix, kind, name, spec, request = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if request ~= '' then
  local existing = redis.call('GET', prefix .. ':submit:' .. request)
  if existing then return existing end
end
local n = redis.call('INCR', prefix .. ':job_seq')
local id = 'job-' .. n
local now = now_ms()
redis.call('HSET', prefix .. ':job:' .. id, 'id', id, 'kind', kind, 'name', name, 'spec', spec, 'state', 'queued',
           'owner', '', 'reason', '', 'created_ms', now, 'started_ms', '0', 'finished_ms', '0', 'updated_ms', now)
redis.call('ZADD', prefix .. ':jobs', n, id)
redis.call('RPUSH', prefix .. ':queue:' .. kind, id)
event(prefix, id, 'state', 'queued')
if request ~= '' then redis.call('SET', prefix .. ':submit:' .. request, id, 'EX', 86400) end
return id
)");
  return s;
}

// ARGV: prefix kind owner. Skips ids whose job is no longer queued (cancelled
// while queued: removed from the queue too, but this is the belt to those braces).
const std::string& claim_script() {
  static const std::string s = with_prelude(R"(
local prefix, kind, owner = ARGV[1], ARGV[2], ARGV[3]
while true do
  local id = redis.call('LPOP', prefix .. ':queue:' .. kind)
  if not id then return false end
  local key = prefix .. ':job:' .. id
  if redis.call('HGET', key, 'state') == 'queued' then
    local now = now_ms()
    redis.call('HSET', key, 'state', 'running', 'owner', owner, 'started_ms', now, 'updated_ms', now)
    redis.call('SADD', prefix .. ':running', id)
    event(prefix, id, 'state', 'running (' .. owner .. ')')
    return id
  end
end
)");
  return s;
}

// ARGV: prefix id to reason owner results
const std::string& transition_script() {
  static const std::string s = with_prelude(R"(
local prefix, id, to, reason, owner, results = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = prefix .. ':job:' .. id
local state = redis.call('HGET', key, 'state')
if not state then return redis.error_reply('NOTFOUND no job ' .. id) end
local allowed = (state == 'running' and (to == 'succeeded' or to == 'failed' or to == 'cancelled')) or
                (state == 'queued' and to == 'cancelled')
if not allowed then
  return redis.error_reply('STATE job ' .. id .. ' is ' .. state .. ': it cannot become ' .. to)
end
if owner ~= '' and redis.call('HGET', key, 'owner') ~= owner then
  return redis.error_reply('STATE job ' .. id .. ' is not held by ' .. owner)
end
if state == 'queued' then redis.call('LREM', prefix .. ':queue:' .. redis.call('HGET', key, 'kind'), 0, id) end
redis.call('SREM', prefix .. ':running', id)
local now = now_ms()
redis.call('HSET', key, 'state', to, 'reason', reason, 'finished_ms', now, 'updated_ms', now)
if results ~= '' then redis.call('HSET', key, 'results', results) end
local msg = to
if reason ~= '' then msg = to .. ': ' .. reason end
event(prefix, id, 'state', msg)
-- Its pool workers (worker_pool.h) are free at once.
local released = 0
for _, name in ipairs(redis.call('SMEMBERS', key .. ':workers')) do
  if redis.call('GET', prefix .. ':assign:' .. name) == id then redis.call('DEL', prefix .. ':assign:' .. name) end
  released = released + 1
end
redis.call('DEL', key .. ':workers')
if released > 0 then event(prefix, id, 'workers', released .. ' worker(s) released: the job is ' .. to) end
return id
)");
  return s;
}

// ARGV: prefix id owner step reward [name value]... Only the job's owner, while it runs.
const std::string& progress_script() {
  static const std::string s = with_prelude(R"(
local prefix, id, owner, step, reward = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = prefix .. ':job:' .. id
if redis.call('HGET', key, 'state') ~= 'running' or redis.call('HGET', key, 'owner') ~= owner then
  return redis.error_reply('STATE job ' .. id .. ' is not running under ' .. owner)
end
redis.call('HSET', key, 'step', step, 'reward', reward, 'updated_ms', now_ms())
for i = 6, #ARGV - 1, 2 do redis.call('HSET', key, 'stat:' .. ARGV[i], ARGV[i + 1]) end
return id
)");
  return s;
}

// ARGV: prefix id owner. Back to the front of its queue, if it still runs
// under `owner` and owner's registry entry (worker_registry.h) has lapsed.
const std::string& requeue_script() {
  static const std::string s = with_prelude(R"(
local prefix, id, owner = ARGV[1], ARGV[2], ARGV[3]
local key = prefix .. ':job:' .. id
if redis.call('HGET', key, 'state') ~= 'running' or redis.call('HGET', key, 'owner') ~= owner then return 0 end
if redis.call('EXISTS', prefix .. ':worker:' .. owner) == 1 then return 0 end
local now = now_ms()
redis.call('HSET', key, 'state', 'queued', 'owner', '', 'updated_ms', now)
redis.call('SREM', prefix .. ':running', id)
redis.call('LPUSH', prefix .. ':queue:' .. redis.call('HGET', key, 'kind'), id)
event(prefix, id, 'state', 'queued again: its runner ' .. owner .. ' stopped heartbeating')
return 1
)");
  return s;
}

int64_t to_int(const std::string& s) {
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

absl::StatusOr<JobRecord> to_record(const RedisReply& hash, const std::string& id) {
  if (hash.elements.empty()) return absl::NotFoundError(absl::StrCat("no job ", id));
  JobRecord r;
  for (size_t i = 0; i + 1 < hash.elements.size(); i += 2) {
    const std::string& k = hash.elements[i].str;
    const std::string& v = hash.elements[i + 1].str;
    if (k == "id") r.id = v;
    else if (k == "name") r.name = v;
    else if (k == "spec") r.spec = v;
    else if (k == "owner") r.owner = v;
    else if (k == "reason") r.reason = v;
    else if (k == "results") r.results = v;
    else if (k == "step") r.step = to_int(v);
    else if (k == "workers_want") r.workers_want = to_int(v);
    else if (k.rfind("stat:", 0) == 0) r.stats[k.substr(5)] = std::strtod(v.c_str(), nullptr);
    else if (k == "reward") r.reward = v.empty() ? NAN : std::strtod(v.c_str(), nullptr);
    else if (k == "created_ms") r.created_ms = to_int(v);
    else if (k == "started_ms") r.started_ms = to_int(v);
    else if (k == "finished_ms") r.finished_ms = to_int(v);
    else if (k == "updated_ms") r.updated_ms = to_int(v);
    else if (k == "kind") {
      auto kind = parse_job_kind(v);
      if (!kind.ok()) return absl::DataLossError(absl::StrCat("job ", id, " in Redis: ", kind.status().message()));
      r.kind = *kind;
    } else if (k == "state") {
      auto state = parse_job_state(v);
      if (!state.ok()) return absl::DataLossError(absl::StrCat("job ", id, " in Redis: ", state.status().message()));
      r.state = *state;
    }
  }
  return r;
}

}  // namespace

const char* job_kind_name(JobKind k) { return k == JobKind::kTrain ? "train" : "rollout"; }

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "?";
}

absl::StatusOr<JobKind> parse_job_kind(std::string_view s) {
  if (s == "train") return JobKind::kTrain;
  if (s == "rollout") return JobKind::kRollout;
  return absl::InvalidArgumentError(absl::StrCat("unknown job kind '", std::string(s), "' (train or rollout)"));
}

absl::StatusOr<JobState> parse_job_state(std::string_view s) {
  for (JobState st : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled})
    if (s == job_state_name(st)) return st;
  return absl::InvalidArgumentError(absl::StrCat("unknown job state '", std::string(s), "'"));
}

bool is_final(JobState s) { return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled; }

absl::StatusOr<std::string> JobStore::submit(const Submission& s) {
  if (s.spec.empty()) return absl::InvalidArgumentError("the job spec is empty");
  if (s.spec.size() > kMaxSpecBytes)
    return absl::InvalidArgumentError(absl::StrCat("the job spec is ", s.spec.size(), " bytes; at most ", kMaxSpecBytes));
  if (s.name.size() > kMaxNameBytes)
    return absl::InvalidArgumentError(absl::StrCat("the job name is ", s.name.size(), " bytes; at most ", kMaxNameBytes));
  if (s.request_id.size() > kMaxNameBytes)
    return absl::InvalidArgumentError(absl::StrCat("the request id is ", s.request_id.size(), " bytes; at most ", kMaxNameBytes));
  auto r = redis_.eval(submit_script(), {}, {prefix_, job_kind_name(s.kind), s.name, s.spec, s.request_id});
  if (!r.ok()) return script_error(r.status());
  return r->str;
}

absl::StatusOr<std::optional<JobRecord>> JobStore::claim(JobKind kind, const std::string& owner) {
  if (owner.empty() || owner.size() > kMaxNameBytes)
    return absl::InvalidArgumentError("a claim needs an owner name of 1..128 bytes");
  auto r = redis_.eval(claim_script(), {}, {prefix_, job_kind_name(kind), owner});
  if (!r.ok()) return script_error(r.status());
  if (r->is_nil()) return std::optional<JobRecord>();
  auto job = get(r->str);
  if (!job.ok()) return job.status();
  return std::optional<JobRecord>(std::move(*job));
}

absl::StatusOr<JobRecord> JobStore::transition(const std::string& id, JobState to, const std::string& reason,
                                               const std::string& owner, const std::string& results) {
  if (to == JobState::kQueued || to == JobState::kRunning)
    return absl::InvalidArgumentError(absl::StrCat("a job becomes ", job_state_name(to), " by submit or claim only"));
  if (reason.size() > kMaxEventBytes) return absl::InvalidArgumentError("the reason is longer than 16 KiB");
  if (results.size() > 4096) return absl::InvalidArgumentError("the results path is longer than 4 KiB");
  auto r = redis_.eval(transition_script(), {}, {prefix_, id, job_state_name(to), reason, owner, results});
  if (!r.ok()) return script_error(r.status());
  return get(id);
}

absl::Status JobStore::set_progress(const std::string& id, const std::string& owner, int64_t step, double reward,
                                   const std::map<std::string, double>& stats) {
  std::vector<std::string> args = {prefix_, id, owner, std::to_string(step),
                                   std::isfinite(reward) ? absl::StrCat(reward) : ""};
  if (stats.size() > 32) return absl::InvalidArgumentError("more than 32 progress figures");
  for (const auto& [name, value] : stats) {
    if (name.empty() || name.size() > 64 || !std::isfinite(value)) continue;  // not worth failing the report for
    args.push_back(name);
    args.push_back(absl::StrCat(value));
  }
  auto r = redis_.eval(progress_script(), {}, args);
  return r.ok() ? absl::OkStatus() : script_error(r.status());
}

absl::StatusOr<std::vector<std::string>> JobStore::requeue_orphans() {
  auto ids = redis_.command({"SMEMBERS", key("running")});
  if (!ids.ok()) return ids.status();
  std::vector<std::string> requeued;
  for (const RedisReply& id : ids->elements) {
    auto job = get(id.str);
    if (absl::IsNotFound(job.status())) {
      (void)redis_.command({"SREM", key("running"), id.str});
      continue;
    }
    if (!job.ok()) return job.status();
    auto r = redis_.eval(requeue_script(), {}, {prefix_, job->id, job->owner});
    if (!r.ok()) return script_error(r.status());
    if (r->integer == 1) requeued.push_back(job->id);
  }
  return requeued;
}

absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> JobStore::counts() {
  std::vector<std::pair<std::string, int64_t>> out;
  int64_t queued = 0;
  for (JobKind kind : {JobKind::kTrain, JobKind::kRollout}) {
    auto n = redis_.command({"LLEN", key(absl::StrCat("queue:", job_kind_name(kind)))});
    if (!n.ok()) return n.status();
    queued += n->integer;
  }
  auto running = redis_.command({"SCARD", key("running")});
  if (!running.ok()) return running.status();
  return std::vector<std::pair<std::string, int64_t>>{{"queued", queued}, {"running", running->integer}};
}

absl::StatusOr<JobRecord> JobStore::get(const std::string& id) {
  auto r = redis_.command({"HGETALL", key("job:" + id)});
  if (!r.ok()) return r.status();
  auto record = to_record(*r, id);
  if (!record.ok() || record->workers_want == 0) return record;
  auto workers = redis_.command({"SCARD", key("job:" + id + ":workers")});
  if (!workers.ok()) return workers.status();
  record->workers = workers->integer;
  return record;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::list(int64_t limit) {
  auto ids = redis_.command({"ZREVRANGE", key("jobs"), "0", std::to_string(std::max<int64_t>(limit, 1) - 1)});
  if (!ids.ok()) return ids.status();
  std::vector<JobRecord> out;
  for (const RedisReply& id : ids->elements) {
    auto job = get(id.str);
    if (absl::IsNotFound(job.status())) continue;  // deleted in between
    if (!job.ok()) return job.status();
    out.push_back(std::move(*job));
  }
  return out;
}

absl::Status JobStore::append_event(const std::string& id, const std::string& type, const std::string& message) {
  if (message.size() > kMaxEventBytes || type.size() > kMaxNameBytes)
    return absl::InvalidArgumentError(absl::StrCat("an event of ", message.size(), " bytes; at most ", kMaxEventBytes));
  auto exists = redis_.command({"EXISTS", key("job:" + id)});
  if (!exists.ok()) return exists.status();
  if (exists->integer == 0) return absl::NotFoundError(absl::StrCat("no job ", id));
  auto r = redis_.command({"XADD", key("events:" + id), "MAXLEN", "~", std::to_string(kMaxEventsKept), "*", "type",
                           type, "message", message});
  return r.status();
}

absl::StatusOr<std::vector<JobEvent>> JobStore::events(const std::string& id, const std::string& after, int64_t count) {
  const std::string from = after.empty() || after == "0" ? "-" : "(" + after;  // exclusive start
  auto r = redis_.command({"XRANGE", key("events:" + id), from, "+", "COUNT", std::to_string(std::max<int64_t>(count, 1))});
  if (!r.ok()) return r.status();
  std::vector<JobEvent> out;
  for (const RedisReply& entry : r->elements) {
    if (entry.elements.size() != 2) continue;
    JobEvent e;
    e.id = entry.elements[0].str;
    const auto& fields = entry.elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "type") e.type = fields[i + 1].str;
      if (fields[i].str == "message") e.message = fields[i + 1].str;
    }
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> JobStore::queue(JobKind kind) {
  auto r = redis_.command({"LRANGE", key(absl::StrCat("queue:", job_kind_name(kind))), "0", "-1"});
  if (!r.ok()) return r.status();
  std::vector<std::string> out;
  for (const RedisReply& e : r->elements) out.push_back(e.str);
  return out;
}

}  // namespace interlace::control
