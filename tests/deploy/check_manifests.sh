#!/usr/bin/env bash
# check_manifests.sh WORK_DIR: deploy/'s overlays render (`kubectl kustomize`,
# no cluster needed), every rendered object validates against the Kubernetes
# API schemas offline (validate.mjs: kubernetes-models and the Prometheus
# operator's and KEDA's models, installed from npm into WORK_DIR by
# package-lock.json), and every workload has probes, limits, a locked-down
# security context and a disruption budget (policy.mjs).
# Exits 77 (ctest: skipped) when kubectl is not on the machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: check_manifests.sh WORK_DIR}
if ! command -v kubectl >/dev/null; then
  echo "SKIP: kubectl not found (it renders the kustomizations; install it to run this check)"
  exit 77
fi
"$here/npm_tools.sh" "$work"
rendered=()
for overlay in "$root"/deploy/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" >"$work/$name.yaml" || { echo "FAIL: kubectl kustomize $overlay"; exit 1; }
  rendered+=("$work/$name.yaml")
done
((${#rendered[@]} >= 4)) || { echo "FAIL: expected overlays local, cpu, gpu, cpu-monitored"; exit 1; }
(cd "$work" && node validate.mjs "${rendered[@]}" && node policy.mjs "${rendered[@]}")
echo "manifests: ok (${#rendered[@]} overlays)"
