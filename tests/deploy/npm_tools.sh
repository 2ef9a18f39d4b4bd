#!/usr/bin/env bash
# npm_tools.sh WORK_DIR: installs the Node.js packages the deploy checks use
# (package-lock.json: kubernetes-models, js-yaml, ...) into WORK_DIR once, and
# copies the check scripts there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: npm_tools.sh WORK_DIR}
command -v node >/dev/null || { echo "FAIL: node not found (Node.js runs the manifest checks)"; exit 1; }
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here"/*.mjs "$work/"
if ! cmp -s "$here/package-lock.json" "$work/node_modules/.package-lock.json.installed" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    { echo "FAIL: npm ci in $work (the npm registry must be reachable once)"; exit 1; }
  cp "$here/package-lock.json" "$work/node_modules/.package-lock.json.installed"
fi
