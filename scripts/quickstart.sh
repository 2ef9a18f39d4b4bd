#!/usr/bin/env bash
# The main job, for now: build, create the tiny hybrid model (7 lightning : 1
# softmax layers, MoE), generate text with it and score that text back through
# both the prefill and the incremental decode paths.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
BIN=build/bin/interlace
OUT=${OUT:-runs/quickstart}
mkdir -p "$OUT"
echo "== creating the tiny hybrid model in $OUT/tiny-hybrid"
$BIN model init --config examples/models/tiny-hybrid.json --out "$OUT/tiny-hybrid" --seed 1
echo "== generating (random weights: expect noise until later issues train it)"
$BIN model generate --model "$OUT/tiny-hybrid" --prompt "The answer is" --max-new-tokens 32 --seed 1
echo "== scoring a token sequence by prefill and by incremental decode"
echo '{"tokens":[256,84,104,101,32,97,110,115,119,101,114,32,105,115,32,52,50,46]}' > "$OUT/tokens.jsonl"
$BIN model score --model "$OUT/tiny-hybrid" --input "$OUT/tokens.jsonl" --output "$OUT/prefill.jsonl"
$BIN model score --model "$OUT/tiny-hybrid" --input "$OUT/tokens.jsonl" --output "$OUT/decode.jsonl" --path decode
echo "prefill: $(cut -c1-120 "$OUT/prefill.jsonl")..."
echo "decode:  $(cut -c1-120 "$OUT/decode.jsonl")..."
