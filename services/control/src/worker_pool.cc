#include "interlace/control/worker_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "interlace/control/job_store.h"
#include "script_util.h"

namespace interlace::control {
namespace {

// ARGV: prefix id owner want min
const std::string& want_script() {
  static const std::string s = detail::with_prelude(R"(
local prefix, id, owner, want, min = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = prefix .. ':job:' .. id
if redis.call('HGET', key, 'state') ~= 'running' or redis.call('HGET', key, 'owner') ~= owner then
  return redis.error_reply('STATE job ' .. id .. ' is not running under ' .. owner)
end
redis.call('HSET', key, 'workers_want', want, 'workers_min', min)
if want == '0' then event(prefix, id, 'workers', 'the learner is done with its workers')
else event(prefix, id, 'workers', 'the learner wants ' .. want .. ' workers (at least ' .. min .. ')') end
return id
)");
  return s;
}

// ARGV: prefix. Returns a flat list: (worker, job, "assigned" | reason) ...
// First takes back what no longer holds, then gives idle pool workers (their
// registry entry says kind "worker", state "idle", and no assignment) to
// running jobs, oldest start first.
const std::string& schedule_script() {
  static const std::string s = detail::with_prelude(R"(
local prefix = ARGV[1]
local out = {}
local function take_back(name, job, why)
  redis.call('DEL', prefix .. ':assign:' .. name)
  redis.call('SREM', prefix .. ':job:' .. job .. ':workers', name)
  event(prefix, job, 'workers', 'worker ' .. name .. ' taken back: ' .. why)
  table.insert(out, name); table.insert(out, job); table.insert(out, why)
end
-- A rollout job a lapsed worker held goes back to the front of its queue.
local function requeue_if_held(name, job)
  local key = prefix .. ':job:' .. job
  if redis.call('HGET', key, 'kind') ~= 'rollout' or redis.call('HGET', key, 'state') ~= 'running' or
     redis.call('HGET', key, 'owner') ~= name then return end
  redis.call('HSET', key, 'state', 'queued', 'owner', '', 'updated_ms', now_ms())
  redis.call('SREM', prefix .. ':running', job)
  redis.call('LPUSH', prefix .. ':queue:rollout', job)
  event(prefix, job, 'state', 'queued again: its worker ' .. name .. ' stopped heartbeating')
end
local function want_of(job)
  return tonumber(redis.call('HGET', prefix .. ':job:' .. job, 'workers_want') or '0') or 0
end
-- Workers assigned to a job whose heartbeat lapsed (the name stays in the
-- job's set until then), or whose job stopped running or wants fewer.
local free = {}
for _, name in ipairs(redis.call('SMEMBERS', prefix .. ':workers')) do
  local job = redis.call('GET', prefix .. ':assign:' .. name)
  local raw = redis.call('GET', prefix .. ':worker:' .. name)
  local entry = nil
  if raw then
    local ok, e = pcall(cjson.decode, raw)
    if ok and type(e) == 'table' then entry = e end
  end
  if job then
    local state = redis.call('HGET', prefix .. ':job:' .. job, 'state')
    if not raw then
      take_back(name, job, 'its heartbeat lapsed')
      requeue_if_held(name, job)
    elseif state ~= 'running' then take_back(name, job, 'the job is ' .. (state or 'gone'))
    elseif redis.call('SCARD', prefix .. ':job:' .. job .. ':workers') > want_of(job) then
      take_back(name, job, 'the job wants ' .. want_of(job))
    end
  end
  if entry and entry.kind == 'worker' and entry.state == 'idle' and
     redis.call('EXISTS', prefix .. ':assign:' .. name) == 0 then
    table.insert(free, name)
  end
end
table.sort(free)
local jobs = {}
for _, id in ipairs(redis.call('SMEMBERS', prefix .. ':running')) do
  local key = prefix .. ':job:' .. id
  -- Names whose registry entry is gone for good (the set of names forgot
  -- them) still count until taken back here.
  for _, name in ipairs(redis.call('SMEMBERS', key .. ':workers')) do
    if redis.call('EXISTS', prefix .. ':worker:' .. name) == 0 then
      redis.call('DEL', prefix .. ':assign:' .. name)
      redis.call('SREM', key .. ':workers', name)
      event(prefix, id, 'workers', 'worker ' .. name .. ' taken back: its heartbeat lapsed')
      table.insert(out, name); table.insert(out, id); table.insert(out, 'its heartbeat lapsed')
      requeue_if_held(name, id)
    end
  end
  local want = want_of(id)
  local have = redis.call('SCARD', key .. ':workers')
  if want > have then
    table.insert(jobs, {id = id, need = want - have, have = have,
                        min = tonumber(redis.call('HGET', key, 'workers_min') or '0') or 0,
                        started = tonumber(redis.call('HGET', key, 'started_ms') or '0') or 0})
  end
end
table.sort(jobs, function(a, b)
  if a.started ~= b.started then return a.started < b.started end
  return a.id < b.id
end)
local next = 1
for _, j in ipairs(jobs) do
  local left = #free - next + 1
  if j.have + left >= j.min then
    while j.need > 0 and next <= #free do
      local name = free[next]
      next = next + 1
      redis.call('SET', prefix .. ':assign:' .. name, j.id)
      redis.call('SADD', prefix .. ':job:' .. j.id .. ':workers', name)
      event(prefix, j.id, 'workers', 'worker ' .. name .. ' assigned')
      table.insert(out, name); table.insert(out, j.id); table.insert(out, 'assigned')
      j.need = j.need - 1
    end
  end
end
-- Idle workers left take queued rollout jobs, oldest first, one each: the
-- job is claimed for the worker (it owns it, and runs its episodes itself).
while next <= #free do
  local id = redis.call('LPOP', prefix .. ':queue:rollout')
  if not id then break end
  local key = prefix .. ':job:' .. id
  if redis.call('HGET', key, 'state') == 'queued' then
    local name = free[next]
    next = next + 1
    local now = now_ms()
    redis.call('HSET', key, 'state', 'running', 'owner', name, 'started_ms', now, 'updated_ms', now,
               'workers_want', '1', 'workers_min', '1')
    redis.call('SADD', prefix .. ':running', id)
    event(prefix, id, 'state', 'running (' .. name .. ')')
    redis.call('SET', prefix .. ':assign:' .. name, id)
    redis.call('SADD', key .. ':workers', name)
    event(prefix, id, 'workers', 'worker ' .. name .. ' assigned')
    table.insert(out, name); table.insert(out, id); table.insert(out, 'assigned')
  end
end
return out
)");
  return s;
}

}  // namespace

absl::Status WorkerPool::want_workers(const std::string& id, const std::string& owner, int64_t want, int64_t min) {
  if (want < 0 || min < 0 || min > want)
    return absl::InvalidArgumentError(absl::StrCat("want ", want, " workers, at least ", min, ": expected 0 <= min <= want"));
  auto r = redis_.eval(want_script(), {}, {prefix_, id, owner, std::to_string(want), std::to_string(min)});
  return r.ok() ? absl::OkStatus() : detail::script_error(r.status());
}

absl::StatusOr<std::vector<Assignment>> WorkerPool::schedule() {
  auto r = redis_.eval(schedule_script(), {}, {prefix_});
  if (!r.ok()) return detail::script_error(r.status());
  std::vector<Assignment> out;
  for (size_t i = 0; i + 2 < r->elements.size(); i += 3) {
    Assignment a{.worker = r->elements[i].str, .job = r->elements[i + 1].str};
    a.assigned = r->elements[i + 2].str == "assigned";
    if (!a.assigned) a.reason = r->elements[i + 2].str;
    out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<std::string> WorkerPool::assignment(const std::string& worker) {
  auto r = redis_.command({"GET", key("assign:" + worker)});
  if (!r.ok()) return r.status();
  return r->is_nil() ? std::string() : r->str;
}

absl::StatusOr<std::vector<std::string>> WorkerPool::assigned(const std::string& id) {
  auto r = redis_.command({"SMEMBERS", key("job:" + id + ":workers")});
  if (!r.ok()) return r.status();
  std::vector<std::string> out;
  for (const RedisReply& e : r->elements) out.push_back(e.str);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace interlace::control
