#!/usr/bin/env bash
# Installs what is missing and builds into build/ (programs in build/bin/).
# Extra arguments go to cmake, e.g. -DINTERLACE_SANITIZE=ON or -DINTERLACE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
# Everything the build used must come from a package install-deps.sh installs
# (or its Depends): otherwise a fresh machine would fail where this one passed.
scripts/check-build-deps.sh "$BUILD_DIR"
