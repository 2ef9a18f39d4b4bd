#!/usr/bin/env bash
# metrics_exported.sh INTERLACE: every metric a dashboard panel or an alert
# rule queries is exported by running services, so dashboards cannot rot.
# Starts a control plane (redis-server, a controller, a runner and a pool worker with --health),
# a serving worker (its /metrics too) with its gateway, and a small RL job (learner + one worker), scrapes the
# controller's, the runner's, the serving worker's, the gateway's, the learner's and the worker's /metrics while they run, and compares the
# sample names with every interlace_* name in dashboards/grafana/*.json,
# dashboards/rules/interlace.rules.yaml and the README's metrics table (and
# the other way round: every exported interlace_* family is in that table).
# The job runs with fixed metrics ports (--metrics-port), lists them in
# RUN/prometheus-targets.json, and keeps each service's last metrics in
# RUN/metrics/SERVICE.prom after it exits.
set -euo pipefail
bin=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
job_pid=""
pids=()
cleanup() {
  # Ctrl-C's signal: `interlace run` stops its learner and worker and exits.
  if [[ -n $job_pid ]]; then kill -INT "$job_pid" 2>/dev/null || true; wait "$job_pid" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# Four free ports for the control plane, then two consecutive ones for the job.
ports=($(/usr/bin/python3 -c '
import random, socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
while True:
    first = random.randint(20000, 60000)
    try:
        pair = [socket.socket(), socket.socket()]
        for i, x in enumerate(pair): x.bind(("127.0.0.1", first + i))
        break
    except OSError:
        pass
print(*[x.getsockname()[1] for x in s], first)'))
redis_server=$(command -v redis-server || true)
[[ -n $redis_server ]] || { echo "FAIL: redis-server not found (scripts/install-deps.sh installs it)"; exit 1; }
"$redis_server" --port "${ports[1]}" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
"$bin" serve controller --redis "127.0.0.1:${ports[1]}" --listen "127.0.0.1:${ports[0]}" --token t >"$work/controller.log" 2>&1 &
pids+=($!)
"$bin" serve runner --redis "127.0.0.1:${ports[1]}" --dir "$work/jobs" --health "127.0.0.1:${ports[2]}" \
  >"$work/runner.log" 2>&1 &
pids+=($!)
# A pool worker (no job comes its way: its series exist from the start).
"$bin" serve worker --redis "127.0.0.1:${ports[1]}" --dir "$work/jobs" --name pool-0 --health "127.0.0.1:${ports[3]}" \
  >"$work/pool-worker.log" 2>&1 &
pids+=($!)
# A serving worker and its gateway (the gateway serves /metrics on its API port).
"$bin" model init --config "$root/examples/models/tiny-hybrid.json" --out "$work/serve-model" >/dev/null 2>&1
"$bin" serve worker --serve "$work/serve-model" --keys "$work/serve-keys" --endpoint-file "$work/serve-endpoint" --quiet \
  --metrics-listen 127.0.0.1:0 --metrics-port-file "$work/serving-metrics-port" >"$work/serving-worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [[ -s $work/serve-endpoint && -s $work/serving-metrics-port ]] && break; sleep 0.05; done
INTERLACE_TOKEN=t "$bin" serve gateway --model "$work/serve-model" --keys "$work/serve-keys" \
  --worker "$(cat "$work/serve-endpoint")" --listen 127.0.0.1:0 --port-file "$work/gateway-port" --quiet >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [[ -s $work/gateway-port ]] && break; sleep 0.05; done
cat >"$work/job.yaml" <<YAML
name: metrics-exported
env: calculator
model: {init: $root/examples/models/tiny-hybrid.json}
algorithm: {name: grpo, steps: 40, groups_per_step: 2, group_size: 2}
rollout: {workers: 1, max_turns: 1, max_turn_tokens: 8}
eval: {prompts: 0}
YAML
"$bin" run "$work/job.yaml" --run-dir "$work/run" --quiet --metrics-port "${ports[4]}" >"$work/run.log" 2>&1 &
job_pid=$!
/usr/bin/python3 - "$root" "$work" "${ports[0]}" "${ports[4]}" "${ports[2]}" "${ports[3]}" "$(cat "$work/gateway-port")" \
  "$(cat "$work/serving-metrics-port")" <<'PY'
import glob, json, re, sys, time, urllib.request
root, work, controller, first, runner, pool_worker, gateway, serving_worker = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]),
    int(sys.argv[8]))

def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None

def names(text):
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}

exported = {}
deadline = time.time() + 600
targets = {"controller": controller, "runner": runner, "pool-worker": pool_worker, "gateway": gateway,
           "serving-worker": serving_worker}
while time.time() < deadline and len(exported) < 7:
    try:
        for t in json.load(open(f"{work}/run/prometheus-targets.json")):
            targets[t["labels"]["service"]] = int(t["targets"][0].rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError):
        pass
    for service, port in targets.items():
        if service not in exported and (text := scrape(port)) is not None:
            # The gateway counts a request once answered: its own first scrape shows up in the second.
            if service == "gateway" and "interlace_gateway_requests_total" not in text:
                continue
            exported[service] = names(text)
    time.sleep(0.2)
missing_services = {"controller", "runner", "pool-worker", "learner", "worker-0", "gateway", "serving-worker"} - exported.keys()
if missing_services:
    print(f"FAIL: could not scrape {sorted(missing_services)}; run log:\n" + open(f"{work}/run.log").read())
    sys.exit(1)
if targets.get("learner") != first or targets.get("worker-0") != first + 1:
    print(f"FAIL: prometheus-targets.json lists {targets}, not --metrics-port {first} and {first + 1}")
    sys.exit(1)
every = set().union(*exported.values())
queried = {}
for path in glob.glob(f"{root}/dashboards/grafana/*.json") + [f"{root}/dashboards/rules/interlace.rules.yaml"]:
    for name in re.findall(r"\binterlace_[a-z0-9_]+", open(path).read()):
        queried.setdefault(name, set()).add(path.rsplit("/", 1)[1])
families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in every if n.startswith("interlace_")}
every |= families  # a histogram is named by its family in the README
documented = set(re.findall(r"^\| `(interlace_[a-z0-9_]+)`", open(f"{root}/README.md").read(), re.M))
for name in documented:
    # NCCL's counters exist only in builds with NCCL (the README says so).
    if "_nccl" not in name:
        queried.setdefault(name, set()).add("README.md")
missing = {n: sorted(w) for n, w in queried.items() if n not in every}
for n, where in sorted(missing.items()):
    print(f"FAIL: {n} is named by {', '.join(where)} but no service exports it")
undocumented = sorted(n for n in families if n not in documented)
for n in undocumented:
    print(f"FAIL: {n} is exported but not in the README's metrics table")
missing = missing or undocumented
print(f"{len(queried)} metric names queried; exported: " +
      ", ".join(f"{s} {len(n)}" for s, n in sorted(exported.items())))
sys.exit(1 if missing else 0)
PY
wait "$job_pid" || { echo "FAIL: the job failed:"; tail -20 "$work/run.log"; exit 1; }
job_pid=""
# The last metrics of each service, kept after it exited.
for service in learner worker-0; do
  f=$work/run/metrics/$service.prom
  [[ -s $f ]] || { echo "FAIL: $f was not written"; ls -R "$work/run"; exit 1; }
done
grep -qx "interlace_learner_steps_total 40" "$work/run/metrics/learner.prom" ||
  { echo "FAIL: learner.prom does not hold the 40 steps:"; grep steps_total "$work/run/metrics/learner.prom"; exit 1; }
grep -q "^interlace_trajectories_acked_total [1-9]" "$work/run/metrics/worker-0.prom" ||
  { echo "FAIL: worker-0.prom has no acknowledged trajectories"; exit 1; }
echo "every queried metric is exported; targets file and last metrics kept: ok"
