#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET ...]: builds the libFuzzer targets (fuzz/, clang,
# ASan + UBSan) into build-fuzz/ and runs each for SECONDS (default 20) on a
# copy of its seed corpus (fuzz/corpus/TARGET). Prints each run's executions
# and coverage; a crash fails the run and leaves its input in build-fuzz/.
# `fuzz.sh --seeds` rewrites the seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh debian-packages.txt debian-packages-fuzz.txt
dir=build-fuzz
all=(trajectory_frame_fuzz message_frames_fuzz spool_fuzz safetensors_fuzz job_spec_fuzz chat_request_fuzz)
scripts/configure-fuzz.sh
started=$SECONDS
cmake --build "$dir" -j "$(nproc)" --target "${all[@]}" make_seeds
scripts/check-build-deps.sh "$dir" debian-packages.txt debian-packages-fuzz.txt
echo "fuzz: build took $((SECONDS - started)) s"
if [[ ${1:-} == --seeds ]]; then
  "$dir/fuzz/make_seeds" fuzz/corpus "$PWD"
  exit 0
fi
seconds=${1:-20}
shift || true
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
passed=0 failed=0
for t in "${targets[@]}"; do
  corpus="$dir/corpus/$t"
  mkdir -p "$corpus" "$dir/crashes/$t"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  log="$dir/$t.log"
  # -rss_limit_mb: a parser that allocates from a length it has not checked fails here.
  if "$dir/fuzz/$t" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
    -artifact_prefix="$dir/crashes/$t/" -print_final_stats=1 >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "fuzz: $t ok: $(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | grep -Eo '[0-9]+$') runs," \
      "$(grep -Eo 'cov: [0-9]+' "$log" | tail -1) edges, corpus $(ls "$corpus" | wc -l) inputs, ${seconds} s"
  else
    failed=$((failed + 1))
    echo "fuzz: $t FAILED (input in $dir/crashes/$t/):"
    grep -E -A 25 'ERROR: |runtime error|deadly signal' "$log" | head -40 || tail -40 "$log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
