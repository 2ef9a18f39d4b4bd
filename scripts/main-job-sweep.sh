#!/usr/bin/env bash
# main-job-sweep.sh [--sft-only] [--seeds "0 1 2 3 4"] [--threads "1 2"] [--job FILE] [--out FILE]
#
# Runs the main job (examples/calculator/job.yaml) once per job seed and
# OpenMP thread count, and writes one JSON table with, per run: the SFT
# model's greedy and sampled held-out rewards, the after-RL ones, the paired
# changes with their standard errors, and the wall time. Another thread count
# sums in another order, which stands in for another CPU: the job's outcome
# must hold across these draws, not on one. Not part of CI (about 8 minutes a
# run on 2 cores; 10 runs by default).
#
# --sft-only: only the SFT warm-up and the held-out evaluation of the SFT
# model (`interlace run --warmup-only`): whether the warm-up gets past the
# copying transition at every draw.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="0 1 2 3 4" threads="1 2" job=examples/calculator/job.yaml out="" sft_only=0
while (($#)); do
  case $1 in
    --sft-only) sft_only=1 ;;
    --seeds) seeds=$2; shift ;;
    --threads) threads=$2; shift ;;
    --job) job=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "main-job-sweep: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bin=build/bin/interlace
[[ -x $bin ]] || scripts/build.sh
root=runs/sweep-$(date +%Y%m%d-%H%M%S)
mkdir -p "$root"
out=${out:-$root/sweep.json}
echo "main-job-sweep: job $job, seeds [$seeds], threads [$threads], runs in $root" >&2
rows=()
for seed in $seeds; do
  for t in $threads; do
    dir=$root/seed$seed-threads$t
    mkdir -p "$dir"
    # The job with its seeds replaced (the job's seed drives the demonstrations,
    # tasks and sampling; model.seed the initial weights).
    sed -e "s/^seed: .*/seed: $seed/" -e "s/^\(  seed: \).*/\1$seed/" "$job" >"$dir/job.yaml"
    start=$SECONDS
    echo "main-job-sweep: seed $seed, OMP_NUM_THREADS=$t ..." >&2
    args=(run "$dir/job.yaml" --run-dir "$dir/run" --quiet -o json)
    ((sft_only)) && args+=(--warmup-only)
    OMP_NUM_THREADS=$t timeout 3600 "$bin" "${args[@]}" >"$dir/summary.json" 2>"$dir/log" ||
      echo "main-job-sweep: run failed, see $dir/log" >&2
    wall=$((SECONDS - start))
    row=$(/usr/bin/python3 - "$dir" "$seed" "$t" "$wall" <<'PY'
import json, os, sys
d, seed, threads, wall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def mean_reward(path):
    try:
        rows = [json.loads(l) for l in open(path) if l.strip()]
    except OSError:
        return None
    return sum(r["reward"] for r in rows) / len(rows) if rows else None
row = {"seed": seed, "threads": threads, "wall_seconds": wall,
       "sft_greedy": mean_reward(os.path.join(d, "run", "eval-before.jsonl")),
       "sft_sampled": mean_reward(os.path.join(d, "run", "eval-before-sampled.jsonl"))}
try:
    s = json.load(open(os.path.join(d, "summary.json")))
    row.update({"rl_greedy": s.get("eval_reward_after"), "rl_sampled": s.get("eval_sampled_reward_after"),
                "greedy_change": s.get("eval_change"), "sampled_change": s.get("eval_sampled_change"),
                "warnings": s.get("warnings", [])})
except (OSError, ValueError):
    pass
print(json.dumps(row))
PY
)
    echo "  $row" >&2
    rows+=("$row")
  done
done
/usr/bin/python3 - "$out" "${rows[@]}" <<'PY'
import json, platform, sys
rows = [json.loads(r) for r in sys.argv[2:]]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
def stats(key):
    v = sorted(r[key] for r in rows if isinstance(r.get(key), (int, float)))
    return {"median": v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2, "min": v[0], "max": v[-1]} if v else None
summary = {k: stats(k) for k in ("sft_greedy", "sft_sampled", "rl_greedy", "rl_sampled", "wall_seconds")}
json.dump({"machine": cpu, "runs": rows, "summary": summary}, open(sys.argv[1], "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
echo "main-job-sweep: table in $out" >&2
