#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test that
# needs no GPU. Extra arguments go to ctest (e.g. -L unit, -R Lightning).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" -LE gpu --timeout 600 "$@"
