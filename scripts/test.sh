#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test that
# needs no GPU and is not labelled slow. Extra arguments go to ctest (e.g. -L unit,
# -R Lightning). The slow ones: `cd build && ctest -L slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
root=$PWD
cd "${BUILD_DIR:-build}"
# A fresh build has no timings, so ctest -j would start the tests in file order
# and the longest (a minute or more) could end up last, alone on one core.
# tests/ctest-costs.txt holds the seconds of the tests over one second from a
# run on 2 cores; ctest starts the most costly first and keeps its own figures
# from then on. A stale or missing entry only changes the order.
costs=Testing/Temporary/CTestCostData.txt
[[ -f $costs ]] || { mkdir -p "$(dirname "$costs")" && cp "$root/tests/ctest-costs.txt" "$costs"; }
ctest --output-on-failure -j "$(nproc)" -LE "gpu|slow" --timeout 600 "$@"
