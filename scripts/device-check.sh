#!/usr/bin/env bash
# One call on a GPU machine: build with CUDA, run the gpu-labelled tests and the
# kernel micro-benchmarks; logs go to $OUT (the device tool's output folder) when set.
# The machine starts bare: the Debian -dev packages must travel with the tree
# (see /work/.library/device/README.md); this script assumes they are installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DINTERLACE_BENCH=ON > "$OUT/configure.log" 2>&1 || { tail -50 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
(cd build-gpu && ctest --output-on-failure -L gpu --timeout 300) 2>&1 | tee "$OUT/gpu-tests.log"
# The NCCL weights tests print what they moved (sizes, GB/s) and why they skip.
timeout 300 build-gpu/tests/nccl_weights_test > "$OUT/nccl-weights.log" 2>&1
# A job asking for weights by NCCL: broadcasts with two or more GPUs, says why
# not (and uses ZeroMQ) with one.
timeout 300 build-gpu/tests/rl_services_test --gtest_filter='*Nccl*' > "$OUT/nccl-job.log" 2>&1
build-gpu/bench/kernels_bench --benchmark_format=json > "$OUT/kernels_bench.json" 2>/dev/null
echo "device-check done"
