#!/usr/bin/env bash
# sanitizer-tests.sh address|thread [TEST ...]: builds with AddressSanitizer +
# UBSan (address: with clang, in build-fuzz/, the build the libFuzzer targets
# share, so CI compiles the tree with ASan once) or ThreadSanitizer (thread:
# gcc, build-tsan/) and runs the tests of the parts where memory and threads are shared: the
# prefix cache, the rollout engine and agent loop, the transport, and the
# services (real learner and worker processes, themselves built with the
# sanitizer), the chat templates and the serving gateway (real serving workers
# and gateways, built with the sanitizer too), and speculative decoding (states
# rolled back, KV rows dropped). A report fails the run. Name tests to run only those.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
case $kind in
  address) dir=build-fuzz ;;
  thread) dir=build-tsan ;;
  *) echo "usage: scripts/sanitizer-tests.sh address|thread [TEST ...]" >&2; exit 2 ;;
esac
shift
tests=("$@")
if ((${#tests[@]} == 0)); then
  # Under ThreadSanitizer only the tests whose code runs more than one thread
  # (services, transport, metrics server, watchdog, supervisor, gateway, and the
  # engine/cache the services share): a single-threaded test cannot race, and
  # its AddressSanitizer run already checks its memory.
  tests=(prefix_cache_test engine_test agent_test transport_test curve_test metrics_test step_watchdog_test
    supervisor_test rl_services_test gateway_test)
  [[ $kind == address ]] && tests+=(trajectory_codec_test job_spec_test trajectory_check_test task_source_test
    rl_batch_test jinja_test openai_api_test prefix_index_test speculative_test verify_test study_summary_test)
fi

# rl_services_test runs as two processes at once (it mostly waits on its child
# processes), split by the times measured under each sanitizer so the halves
# take about as long; the second half is everything not in the first, so a new
# test lands somewhere. Under TSan (5-10x slower here) the two slowest cases,
# poisoned trajectories and killed services, are left out: they exercise
# validation and restarts on the same threads the other eight cases run, and
# they run under ASan and in the release build.
rl_first='RlJob.PoisonedTrajectories*:RlJob.AFullDisk*:RlJob.WorkerEvicts*:RlJob.RestartsBackOff*:RlJob.UnfinishedGroups*'
rl_skip=''
if [[ $kind == thread ]]; then
  rl_first='RlJob.ForgedHeartbeats*:RlJob.RestartsBackOff*:RlJob.UnfinishedGroups*'
  rl_skip=':RlJob.PoisonedTrajectories*:RlJob.SurvivesKilled*'
fi
rl_filters=("$rl_first" "-$rl_first$rl_skip")

started=$SECONDS
# RelWithDebInfo: reports with line numbers; no CUDA, no benchmarks (not run here).
if [[ $kind == address ]]; then
  scripts/install-deps.sh debian-packages.txt debian-packages-fuzz.txt
  scripts/configure-fuzz.sh
else
  scripts/install-deps.sh
  # -g1: line tables for the reports; full debug info only costs build time.
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINTERLACE_SANITIZE="$kind" \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
    -DINTERLACE_CUDA=OFF -DINTERLACE_BENCH=OFF >/dev/null
fi
cmake --build "$dir" -j "$(nproc)" --target interlace "${tests[@]}"
echo "sanitizer-tests: $kind build took $((SECONDS - started)) s"

# Reports go to files, one per process: the services tests run the learner and
# workers as child processes, and `interlace run` restarts a child that a
# report killed, so a test can pass while a child had a report. Any report
# file fails the stage.
reports="$PWD/$dir/sanitizer-reports"
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan:suppressions=$PWD/scripts/sanitizers/thread.supp"
if [[ $kind == thread ]]; then
  # libgomp (GCC's OpenMP, also oneDNN's threading) is not built with TSan, so
  # TSan cannot see its barriers and reports its worker threads' hand-offs as
  # races. One OpenMP thread keeps every parallel region on the calling thread:
  # the kernels' data-parallel loops are not what this stage checks; the
  # services' own threads (learner training thread, metrics server, NCCL
  # sender) and ZeroMQ's are.
  export OMP_NUM_THREADS=1
fi

passed=0 failed=0 failed_names=()
for t in "${tests[@]}"; do
  log="$dir/$t.log"
  t0=$SECONDS
  find "$reports" -type f | sort >"$dir/reports-before"
  status=ok
  if [[ $t == rl_services_test ]]; then
    pids=()
    for i in 0 1; do
      "$dir/tests/$t" --gtest_filter="${rl_filters[$i]}" >"$log.$i" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || status=FAILED; done
    cat "$log.0" "$log.1" >"$log"
  elif ! "$dir/tests/$t" >"$log" 2>&1; then
    status=FAILED
  fi
  new_reports=$(comm -13 "$dir/reports-before" <(find "$reports" -type f | sort))
  if [[ -n $new_reports ]]; then
    status=FAILED
    echo "sanitizer-tests: $kind $t: sanitizer reports (from the test or a process it started):"
    echo "$new_reports" | while read -r r; do
      echo "--- $r"
      head -60 "$r"
    done
  fi
  n_pass=$(grep -Eo '^\[  PASSED  \] [0-9]+' "$log" | grep -Eo '[0-9]+$' | awk '{s += $1} END {print s + 0}' || true)
  n_fail=$(grep -Eo '^\[  FAILED  \] [0-9]+ test' "$log" | grep -Eo '[0-9]+' | awk '{s += $1} END {print s + 0}' || true)
  [[ $status == FAILED && $n_fail == 0 ]] && n_fail=1  # a sanitizer report ends the program before gtest counts
  passed=$((passed + n_pass)) failed=$((failed + ${n_fail:-0}))
  echo "sanitizer-tests: $kind $t: $status ($n_pass passed, ${n_fail:-0} failed, $((SECONDS - t0)) s)"
  if [[ $status == FAILED ]]; then
    failed_names+=("$t")
    grep -E -A 12 '\[  FAILED  \]|Failure' "$log" | head -80 || true
  fi
done
echo "sanitizer-tests: $kind stage took $((SECONDS - started)) s"
if ((${#failed_names[@]})); then
  echo "sanitizer-tests: $kind: failed: ${failed_names[*]} (logs in $dir/)"
fi
echo "${kind}-sanitizer: $passed passed, $failed failed"
((${#failed_names[@]} == 0))
