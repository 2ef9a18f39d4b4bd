#!/usr/bin/env bash
# check_openai_client.sh WORK_DIR INTERLACE: the real `openai` npm client
# (installed once from the npm registry, package-lock.json) against a serving
# worker and a gateway of a tiny model: models, whole and streamed chat, two
# turns with a tool call and cached tokens, n > 1, stop strings, a client that
# hangs up mid-stream, and the error classes (tests/serving/openai-client).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: check_openai_client.sh WORK_DIR INTERLACE}
bin=${2:?usage: check_openai_client.sh WORK_DIR INTERLACE}
"$here/../support/npm_install.sh" "$here/openai-client" "$work"
run=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
"$bin" model init --config "$root/examples/models/tiny-hybrid.json" --out "$run/tiny" >/dev/null 2>&1
"$bin" serve worker --serve "$run/tiny" --keys "$run/keys" --endpoint-file "$run/endpoint" --threads 1 --quiet >"$run/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [[ -s $run/endpoint ]] && break; sleep 0.05; done
INTERLACE_TOKEN=openai-check "$bin" serve gateway --model "$run/tiny" --keys "$run/keys" --worker "$(cat "$run/endpoint")" \
  --listen 127.0.0.1:0 --port-file "$run/port" --max-model-len 4096 --quiet >"$run/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [[ -s $run/port ]] && break; sleep 0.05; done
port=$(cat "$run/port")
node "$work/client.mjs" "http://127.0.0.1:$port/v1" openai-check tiny || { echo "--- gateway log"; tail -20 "$run/gateway.log"; exit 1; }
