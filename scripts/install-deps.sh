#!/usr/bin/env bash
# Installs the Debian packages Interlace builds against, if any are missing.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libabsl-dev          # Status / StatusOr
  libspdlog-dev        # logging
  nlohmann-json3-dev   # JSON (configs, safetensors headers, JSONL)
  libcli11-dev         # command line
  libdnnl-dev          # oneDNN: CPU GEMM (AVX-512 / AMX)
  libgtest-dev libgmock-dev
  libbenchmark-dev     # Google Benchmark (bench/)
  capnproto libcapnp-dev  # the wire contract (proto/): schema compiler and runtime
  libzmq3-dev cppzmq-dev  # ZeroMQ sockets between services (C library + C++ header)
  libyaml-cpp-dev      # job specs (interlace run JOB.yaml)
  prometheus           # the tests scrape the services' /metrics with a real Prometheus
)

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
