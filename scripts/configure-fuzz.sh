#!/usr/bin/env bash
# Configures build-fuzz/: clang, every library and program instrumented for
# libFuzzer and built with ASan + UBSan (INTERLACE_FUZZ). Shared by
# scripts/fuzz.sh (the fuzz targets) and scripts/sanitizer-tests.sh address
# (the tests), so CI compiles the tree with ASan once.
set -euo pipefail
cd "$(dirname "$0")/.."
# -g1: line tables are all a sanitizer report needs, and full debug info costs CI minutes.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
  -DINTERLACE_FUZZ=ON -DINTERLACE_CUDA=OFF -DINTERLACE_TESTS=ON -DINTERLACE_BENCH=OFF -DINTERLACE_NATIVE=OFF >/dev/null
