#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test that
# needs no GPU and is not labelled slow. Extra arguments go to ctest (e.g. -L unit,
# -R Lightning). The slow ones: `cd build && ctest -L slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" -LE "gpu|slow" --timeout 600 "$@"
