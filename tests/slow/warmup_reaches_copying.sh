#!/usr/bin/env bash
# warmup_reaches_copying.sh INTERLACE JOB: the main job's SFT warm-up, run
# with one and with two OpenMP threads (two summation orders: what another CPU
# does to the rounding), must each reach the greedy held-out reward the job
# expects (sft.expect_greedy_reward): the level at which the model has learnt
# to copy numbers, which RL needs to start from. Label `slow` (minutes, not in
# the default test command): run it with `ctest -L slow`.
set -euo pipefail
bin=$1 job=$2
want=$(sed -n 's/^ *expect_greedy_reward: *\([0-9.]*\).*/\1/p' "$job")
[[ -n $want ]] || { echo "FAIL: $job has no sft.expect_greedy_reward"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for threads in 1 2; do
  dir=$work/threads$threads
  OMP_NUM_THREADS=$threads "$bin" run "$job" --run-dir "$dir" --warmup-only --quiet -o json >"$work/out$threads.json" \
    2>"$work/log$threads" || { echo "FAIL: the warm-up with $threads thread(s) failed:"; tail -20 "$work/log$threads"; exit 1; }
  got=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["eval_reward_before"])' "$work/out$threads.json")
  if /usr/bin/python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$got" "$want"; then
    echo "ok: OMP_NUM_THREADS=$threads: greedy held-out reward $got >= $want"
  else
    echo "FAIL: OMP_NUM_THREADS=$threads: greedy held-out reward $got < $want (the warm-up did not get past copying)"
    failed=1
  fi
done
exit $failed
