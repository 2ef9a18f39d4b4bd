#!/usr/bin/env bash
# device-check.sh: one call on a bare GPU machine (the device tool's H200:
# CUDA, CMake, ninja and a compiler, no Debian -dev packages, no registry).
#   here, once:   bash scripts/device-debs.sh          (the .debs, into .device-debs/)
#   there:        run(carry=[".device-debs"], command="bash scripts/device-check.sh", timeout_s=540)
# Unpacks the .debs into .debroot/ (not into /), builds the GPU-only tree
# (-DINTERLACE_GPU_ONLY=ON: core, kernels, kernels/cuda and their tests) for
# sm_90, runs the gpu-labelled tests (every CUDA op against the CPU reference)
# and the quick host-side unit test built with them, and prints a short table
# last. Logs go to $OUT (the device tool's output folder) when set.
# Not here yet (issue 24): the model forward and the learner on the device, the
# transformers comparison, NCCL, and the benchmarks: nothing that runs them exists.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
started=$SECONDS
step() { echo "device-check: $* ($((SECONDS - started)) s)"; }

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || step "nvidia-smi failed: $(head -1 "$OUT/nvidia-smi.txt")"
prefix=
if compgen -G ".device-debs/*.deb" >/dev/null; then
  rm -rf .debroot
  mkdir -p .debroot
  for f in .device-debs/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" .debroot
    else  # no dpkg: a .deb is an ar archive holding data.tar.*
      (cd .debroot && ar p "../$f" "$(ar t "../$f" | grep '^data.tar')" | tar -x --auto-compress -f - 2>/dev/null ||
        ar p "../$f" "$(ar t "../$f" | grep '^data.tar')" | tar -xJ -f -)
    fi
  done
  prefix="$PWD/.debroot/usr"
  export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  step "unpacked $(ls .device-debs/*.deb | wc -l) .debs into .debroot"
else
  step "no .device-debs/ (run scripts/device-debs.sh here and carry it): using what the machine has"
fi

cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DINTERLACE_GPU_ONLY=ON \
  ${prefix:+-DCMAKE_PREFIX_PATH="$prefix"} >"$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
step "configured"
cmake --build build-gpu -j "$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error" -A5 "$OUT/build.log" | head -60; exit 1; }
step "built"
tests_rc=0
export INTERLACE_REQUIRE_GPU=1  # cuda_backend_test fails, not skips, when the device cannot be used
for t in build-gpu/tests/*_test; do
  timeout 300 "$t" --gtest_brief=1 >"$OUT/$(basename "$t").log" 2>&1 || tests_rc=1
  step "$(basename "$t") done"
done

echo
echo "| test binary | passed | failed | skipped |"
echo "|---|---|---|---|"
for log in "$OUT"/*_test.log; do
  count() { grep -Eo "^\[  $1 +\] [0-9]+ test" "$log" | grep -Eo '[0-9]+' | head -1; }
  printf '| %s | %s | %s | %s |\n' "$(basename "$log" .log)" "$(count PASSED)" "$(count FAILED)" "$(count SKIPPED)"
done
grep -E "^\[  FAILED  \]|Failure|Expected|Which is" "$OUT"/*_test.log | head -40
echo "device-check: done in $((SECONDS - started)) s, $([[ $tests_rc == 0 ]] && echo "all passed" || echo "FAILURES")"
exit $tests_rc
