#!/usr/bin/env bash
# local_overlay_runs.sh INTERLACE WORK_DIR: the manifests really run. Builds
# the images (deploy/images/build.sh, from this build's binary), renders
# deploy/overlays/local, rewrites it for podman 4.3 on the host network
# (podman_play.mjs says what that changes: Services, NetworkPolicies and
# disruption budgets do not act under podman, and probes run as commands in
# the container, so this test does not prove them; it polls /healthz itself),
# starts it with `podman kube play --network host`, submits a small train job
# from outside with the CLI, waits for it to succeed, scrapes the
# controller's and the runner's /metrics and reads the job's kept learner and
# worker metrics, then tears it all down (`podman kube down`, images
# removed) even when it fails. Exits 77 (skipped) without podman or kubectl.
set -euo pipefail
bin=$1
work=${2:?usage: local_overlay_runs.sh INTERLACE WORK_DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
for tool in podman kubectl; do
  command -v $tool >/dev/null || { echo "SKIP: $tool not found (scripts/install-deps.sh installs podman)"; exit 77; }
done
export CONTAINERS_CONF=$here/containers.conf
"$here/npm_tools.sh" "$work"
run=$(mktemp -d)
tag=test-$$
cleanup() {
  [[ -f $run/play.yaml ]] && podman kube down "$run/play.yaml" >/dev/null 2>&1 || true
  podman rmi -f "localhost/interlace:$tag" "localhost/interlace-redis:$tag" >/dev/null 2>&1 || true
  rm -rf "$run"
}
trap cleanup EXIT
"$root/deploy/images/build.sh" --binary "$bin" --tag "$tag" >/dev/null
kubectl kustomize "$root/deploy/overlays/local" | sed "s#localhost/interlace:dev#localhost/interlace:$tag#; s#localhost/interlace-redis:dev#localhost/interlace-redis:$tag#" >"$run/local.yaml"
ports=($(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'))
mkdir -p "$run/data/redis-data" "$run/data/interlace-runner-jobs"
chmod 777 "$run/data/redis-data" "$run/data/interlace-runner-jobs"  # the pods' users (999, 10001) write there
(cd "$work" && node podman_play.mjs "$run/local.yaml" "$run/data" "${ports[@]}") >"$run/play.yaml"
# Pods an interrupted earlier run left behind (podman names them DEPLOYMENT-pod-0) would block this one.
podman pod rm -f redis-pod-0 interlace-controller-pod-0 interlace-runner-pod-0 >/dev/null 2>&1 || true
podman kube play --network host "$run/play.yaml" >"$run/play.log" 2>&1 ||
  { echo "FAIL: podman kube play:"; cat "$run/play.log"; exit 1; }
healthy() { /usr/bin/python3 -c '
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1"; }
fetch() { /usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
for url in "http://127.0.0.1:${ports[1]}/healthz" "http://127.0.0.1:${ports[1]}/readyz" "http://127.0.0.1:${ports[2]}/healthz"; do
  for ((i = 0; i < 300; ++i)); do healthy "$url" && break; sleep 0.2; done
  healthy "$url" || { echo "FAIL: $url never answered 200"; podman ps -a; podman pod logs --names 2>/dev/null | tail -30 || true; exit 1; }
done
cat >"$run/job.yaml" <<YAML
name: podman-smoke
env: calculator
model: {init: /opt/interlace/examples/models/tiny-hybrid.json}   # in the image
algorithm: {name: grpo, steps: 3, groups_per_step: 2, group_size: 2}
rollout: {workers: 1, max_turns: 1, max_turn_tokens: 8}
eval: {prompts: 2, samples: 1}
YAML
timeout 600 "$bin" submit "$run/job.yaml" --server "http://127.0.0.1:${ports[1]}" --token local-dev-token --wait \
  >"$run/submit.log" 2>&1 || { echo "FAIL: the job did not succeed:"; cat "$run/submit.log"; exit 1; }
grep -q "^\[state\] succeeded" "$run/submit.log" || { echo "FAIL: no success in:"; cat "$run/submit.log"; exit 1; }
controller=$(fetch "http://127.0.0.1:${ports[1]}/metrics")
runner=$(fetch "http://127.0.0.1:${ports[2]}/metrics")
grep -q '^interlace_controller_requests_total{code="201",route="/v1/jobs"} 1' <<<"$controller" ||
  { echo "FAIL: the controller's metrics do not count the submission:"; echo "$controller" | grep requests_total; exit 1; }
grep -q '^interlace_runner_jobs_total{kind="train"} 1' <<<"$runner" ||
  { echo "FAIL: the runner's metrics do not count the job:"; echo "$runner"; exit 1; }
metrics=$run/data/interlace-runner-jobs/job-1/run/metrics
grep -qx "interlace_learner_steps_total 3" "$metrics/learner.prom" ||
  { echo "FAIL: the job's learner metrics ($metrics/learner.prom) do not show its 3 steps"; ls -R "$run/data" | head -40; exit 1; }
grep -q "^interlace_trajectories_acked_total [1-9]" "$metrics/worker-0.prom" ||
  { echo "FAIL: the job's worker metrics show no acknowledged trajectory"; exit 1; }
echo "local overlay under podman: controller, runner and Redis up; a job submitted from outside succeeded; metrics scraped: ok"
