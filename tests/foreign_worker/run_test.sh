#!/usr/bin/env bash
# A job whose only rollout worker is tests/foreign_worker/worker.py (Python,
# pyzmq and the capnp tool; no Interlace code): it must train every step.
# usage: run_test.sh INTERLACE_BIN SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
dir=$(mktemp -d /tmp/interlace-foreign-XXXXXX)
trap 'kill $job 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/job.yaml" <<YAML
name: foreign
env: calculator
model: {init: $src/examples/models/tiny-hybrid.json}
algorithm: {name: grpo, steps: 3, groups_per_step: 2, group_size: 2}
rollout: {workers: 0}
eval: {prompts: 0}
YAML
"$bin" run "$dir/job.yaml" --run-dir "$dir/run" >"$dir/run.log" 2>&1 &
job=$!
for _ in $(seq 600); do [[ -f $dir/run/endpoints.json ]] && break; sleep 0.1; done
/usr/bin/python3 "$src/tests/foreign_worker/worker.py" "$dir/run" "$src/proto"
wait $job || { echo "the job failed:"; cat "$dir/run.log"; exit 1; }
steps=$(wc -l <"$dir/run/trained.jsonl")
echo "foreign worker test: the job trained $steps steps on the foreign worker's trajectories"
[[ $steps -eq 3 ]]
