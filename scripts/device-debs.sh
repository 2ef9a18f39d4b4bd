#!/usr/bin/env bash
# device-debs.sh: downloads, on this machine (Debian 12, with its package
# registry), the .deb files a bare GPU machine needs for the GPU-only build
# (cmake -DINTERLACE_GPU_ONLY=ON: core, kernels, kernels/cuda, gpu tests) into
# .device-debs/ (ignored by git). The device tool carries that folder when a
# run names it: run(carry=[".device-debs"], command="bash scripts/device-check.sh").
# scripts/device-check.sh unpacks them into .debroot/ there (never into /).
set -euo pipefail
cd "$(dirname "$0")/.."
# The -dev packages and the runtime libraries they depend on (a bare machine
# has neither); oneDNN's CMake package needs OpenCL's headers and loader.
packages=(
  libabsl-dev libabsl20220623
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libdnnl-dev libdnnl2
  ocl-icd-opencl-dev ocl-icd-libopencl1 opencl-c-headers opencl-clhpp-headers
  libgtest-dev libgmock-dev
)
mkdir -p .device-debs
cd .device-debs
apt-get download "${packages[@]}"
du -sh . | awk '{print "device-debs: " $1 " in .device-debs/ (the device tool carries at most 64 MiB with the tree)"}'
