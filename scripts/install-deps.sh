#!/usr/bin/env bash
# install-deps.sh [LIST ...]: installs the Debian packages named in the lists
# (default scripts/debian-packages.txt; scripts/fuzz.sh adds
# debian-packages-fuzz.txt), if any are missing. Safe to run repeatedly; does
# nothing when all are present.
set -euo pipefail
cd "$(dirname "$0")"
lists=("$@")
((${#lists[@]})) || lists=(debian-packages.txt)

mapfile -t PACKAGES < <(cat "${lists[@]}" | sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d')

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
