#!/usr/bin/env bash
# build.sh [--binary FILE] [--tag TAG] [--check-cuda]: builds the images the
# manifests run, from scratch (no base image: Docker Hub is not needed):
#   localhost/interlace:TAG        the interlace binary, the shared libraries
#                                  `ldd` lists, the dynamic loader, examples/
#                                  under /opt/interlace, /etc/passwd for uid 10001
#   localhost/interlace-redis:TAG  Debian's redis-server the same way, redis.conf
# with podman (`podman build`; buildah does the same). --check-cuda only checks
# Containerfile.cuda's references (it needs NVIDIA's registry to build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=$root/build/bin/interlace tag=dev check_cuda=0
while (($#)); do
  case $1 in
    --binary) binary=$2; shift ;;
    --tag) tag=$2; shift ;;
    --check-cuda) check_cuda=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((check_cuda)); then
  grep -q '^FROM nvcr.io/nvidia/cuda:' "$here/Containerfile.cuda" &&
    grep -q 'ENTRYPOINT \["/usr/local/bin/interlace"\]' "$here/Containerfile.cuda" ||
    { echo "build.sh: Containerfile.cuda lost its base or entrypoint" >&2; exit 1; }
  echo "build.sh: Containerfile.cuda checked (not built: needs the CUDA build and NVIDIA's registry)"
  exit 0
fi
command -v podman >/dev/null || { echo "build.sh: podman not found (apt-get install podman runc catatonit)" >&2; exit 1; }
[[ -x $binary ]] || { echo "build.sh: $binary is not built (scripts/build.sh)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Copies a program and every shared library it links (with the loader) into a root.
add_program() {  # ROOT PROGRAM DEST
  local rootfs=$1 program=$2 dest=$3
  install -D -m 0755 "$program" "$rootfs$dest"
  ldd "$program" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"  # the loader must be executable
  done
}
passwd() {  # ROOT UID NAME
  mkdir -p "$1/etc"
  printf 'root:x:0:0::/:/nonexistent\n%s:x:%s:%s::/tmp:/nonexistent\n' "$3" "$2" "$2" >"$1/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$3" "$2" >"$1/etc/group"
  mkdir -p "$1/tmp" && chmod 1777 "$1/tmp"
}

mkdir -p "$work/rootfs"
add_program "$work/rootfs" "$binary" /usr/local/bin/interlace
passwd "$work/rootfs" 10001 interlace
mkdir -p "$work/rootfs/opt/interlace"
cp -r "$root/examples" "$work/rootfs/opt/interlace/"
cp "$here/Containerfile" "$work/"
podman build --quiet -t "localhost/interlace:$tag" -f "$work/Containerfile" "$work" >/dev/null

redis=$(command -v redis-server) || { echo "build.sh: redis-server not found" >&2; exit 1; }
mkdir -p "$work/rootfs-redis" "$work/redis-data/data"  # /data, owned by redis (COPY --chown)
add_program "$work/rootfs-redis" "$redis" /usr/bin/redis-server
passwd "$work/rootfs-redis" 999 redis
install -D -m 0644 "$here/redis.conf" "$work/rootfs-redis/etc/redis/redis.conf"
cp "$here/Containerfile.redis" "$work/"
podman build --quiet -t "localhost/interlace-redis:$tag" -f "$work/Containerfile.redis" "$work" >/dev/null
echo "build.sh: built localhost/interlace:$tag and localhost/interlace-redis:$tag"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^localhost/interlace(-redis)?:$tag "
