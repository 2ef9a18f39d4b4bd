#!/usr/bin/env bash
# The main job: build, then run examples/calculator/job.yaml on this machine:
# SFT warm-up of the tiny hybrid model (3 lightning : 1 softmax layers, twice;
# MoE) on calculator demonstrations, held-out evaluation, GRPO with a learner
# and a rollout worker talking over ZeroMQ, evaluation again, and a report.
# The job took 9m36s alone on a 2-core Xeon (after the build); its SFT warm-up
# stops when the model has learnt to copy numbers, 300-900 steps over the
# README's sweep of draws, so other draws take about 7-15 minutes (estimated). Extra arguments
# go to `interlace run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
RUN_DIR=${RUN_DIR:-runs/calculator-$(date +%Y%m%d-%H%M%S)}
build/bin/interlace run examples/calculator/job.yaml --run-dir "$RUN_DIR" "$@"
echo "open $RUN_DIR/report.html for the plots"
