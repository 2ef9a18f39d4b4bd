#!/usr/bin/env bash
# npm_install.sh SOURCE_DIR WORK_DIR: copies SOURCE_DIR's package.json,
# package-lock.json and *.mjs scripts into WORK_DIR and installs the locked
# npm packages there, once per package-lock.json (the tests that check
# against Node.js tools: deploy manifests, reference tokenizers, the openai
# client).
set -euo pipefail
source_dir=${1:?usage: npm_install.sh SOURCE_DIR WORK_DIR}
work=${2:?usage: npm_install.sh SOURCE_DIR WORK_DIR}
command -v node >/dev/null || { echo "FAIL: node not found (Node.js runs this check)"; exit 1; }
mkdir -p "$work"
cp "$source_dir/package.json" "$source_dir/package-lock.json" "$source_dir"/*.mjs "$work/"
if ! cmp -s "$source_dir/package-lock.json" "$work/node_modules/.package-lock.json.installed" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    { echo "FAIL: npm ci in $work (the npm registry must be reachable once)"; exit 1; }
  cp "$source_dir/package-lock.json" "$work/node_modules/.package-lock.json.installed"
fi
