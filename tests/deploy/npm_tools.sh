#!/usr/bin/env bash
# npm_tools.sh WORK_DIR: installs the Node.js packages the deploy checks use
# (package-lock.json: kubernetes-models, js-yaml, ...) into WORK_DIR once, and
# copies the check scripts there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../support/npm_install.sh" "$here" "${1:?usage: npm_tools.sh WORK_DIR}"
