#!/usr/bin/env bash
# check-build-deps.sh [BUILD_DIR [LIST ...]]: fails when the build resolved a header, a
# library or a program from a Debian package that a fresh machine would not
# have: one that is neither in the package lists (default
# scripts/debian-packages.txt, names relative to scripts/) nor pulled in by
# those packages' Depends/Pre-Depends (Recommends do not count: install-deps.sh
# installs without them), nor part of Debian's base system (Essential or
# Priority: required).
#
# Why: a package installed by hand on every developer's machine (OpenCL, which
# oneDNN's CMake package looks for and Debian only recommends) made the build
# pass everywhere but on a fresh machine. What the build resolved comes from
# CMakeCache.txt (libraries, programs, CMake package files), and once built,
# from Ninja's record of every header compiled and the link commands.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=$(cd "${1:-build}" && pwd)
shift || true
lists=("$@")
((${#lists[@]})) || lists=(debian-packages.txt)
cache="$build/CMakeCache.txt"
if [[ ! -f $cache ]]; then
  echo "check-build-deps: $cache not found: configure first (scripts/build.sh)" >&2
  exit 2
fi
# Used when present, not needed otherwise (the build configures without them).
OPTIONAL_ROOTS=(/usr/local/cuda)  # CUDA toolkit and NCCL: kernels/cuda and weights by NCCL
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. "path<TAB>where it came from", for every file the build resolved.
{
  # CMakeCache: FILEPATH/PATH entries (lists split); a CMake package directory
  # stands for its config files, other directories for nothing (their headers
  # are checked one by one below).
  awk '/^[^#\/][^:]*:(FILEPATH|PATH)=\// {
         key = substr($0, 1, index($0, ":") - 1); val = substr($0, index($0, "=") + 1)
         n = split(val, parts, ";"); for (i = 1; i <= n; ++i) print parts[i] "\t" key }' "$cache" |
    while IFS=$'\t' read -r path key; do
      [[ $key == CMAKE_INSTALL_PREFIX ]] && continue
      if [[ -d $path ]]; then
        for f in "$path"/*[Cc]onfig.cmake; do [[ -f $f ]] && printf '%s\tCMakeCache %s\n' "$f" "$key"; done
      elif [[ -e $path ]]; then
        printf '%s\tCMakeCache %s\n' "$path" "$key"
      fi
    done
  if [[ -f $build/.ninja_deps ]]; then
    ninja -C "$build" -t deps 2>/dev/null | awk '/^    \// { sub(/^ +/, ""); print $0 "\theader" }'
    # Absolute library paths and -lNAME on the link lines.
    ninja -C "$build" -t commands 2>/dev/null | tr ' ' '\n' |
      awk '/^\/.*\.(so|a)(\.[0-9.]+)?$/ { print $0 "\tlinked" } /^-l[A-Za-z0-9_+.-]+$/ { print $0 "\tlinked" }' | sort -u |
      while IFS=$'\t' read -r lib how; do
        if [[ $lib == -l* ]]; then
          f=$(g++ -print-file-name="lib${lib#-l}.so")
          [[ $f == /* ]] || f=$(g++ -print-file-name="lib${lib#-l}.a")
          [[ $f == /* ]] && printf '%s\tlinked (%s)\n' "$f" "$lib"
        else
          printf '%s\t%s\n' "$lib" "$how"
        fi
      done
  fi
} | awk -F'\t' -v src="$src/" -v build="$build/" 'index($1, src) != 1 && index($1, build) != 1 && !seen[$1]++' \
  >"$work/resolved"

# Normalise (a/../b) without following links: dpkg knows the names packages ship.
cut -f1 "$work/resolved" | xargs -r -d '\n' realpath -s -m -- >"$work/normal"
paste "$work/normal" <(cut -f2 "$work/resolved") | awk -F'\t' '!seen[$1]++' >"$work/paths"

# 2. Owner packages. dpkg -S prints "pkg[:arch][, pkg2...]: /path" for owned paths.
owners() { { xargs -r -d '\n' dpkg-query -S -- 2>/dev/null || true; } | awk '!/^diversion/ {
  i = index($0, ": /"); pk = substr($0, 1, i - 1); gsub(/:[a-z0-9]+/, "", pk); gsub(/ /, "", pk); print substr($0, i + 2) "\t" pk }'; }
cut -f1 "$work/paths" | owners >"$work/owned"
# Unowned: try the name behind symlinks (alternatives such as /usr/bin/c++), and
# the other half of Debian's merged /usr (/lib vs /usr/lib).
awk -F'\t' 'NR == FNR { owned[$1] = 1; next } !($1 in owned) { print $1 }' "$work/owned" "$work/paths" |
  while read -r p; do
    candidates=("$(realpath -m -- "$p")")
    case $p in /usr/lib/* | /usr/bin/* | /usr/sbin/*) candidates+=("${p#/usr}") ;; /lib/* | /bin/* | /sbin/*) candidates+=("/usr$p") ;; esac
    for c in "${candidates[@]}"; do
      o=$(printf '%s\n' "$c" | owners | cut -f2 | head -1)
      if [[ -n $o ]]; then printf '%s\t%s\n' "$p" "$o"; break; fi
    done
  done >>"$work/owned"

# 3. What a fresh machine has: the base system, the list, and their Depends and
# Pre-Depends, transitively (every alternative of an "a | b" counts, and a
# virtual package stands for whichever installed package provides it).
(cd "$here" && cat "${lists[@]}") | sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' >"$work/list"
dpkg-query -W -f='${db:Status-Status}\t${Package}\t${Essential}\t${Priority}\t${Provides}\t${Depends}, ${Pre-Depends}\n' |
  awk -F'\t' '$1 == "installed"' | cut -f2- >"$work/installed"
awk -F'\t' '
  function name(s) { gsub(/\(.*\)/, "", s); gsub(/:[a-z0-9]+/, "", s); gsub(/ /, "", s); return s }
  function want(p) { if (!(p in queued)) { queued[p] = 1; queue[++tail] = p } }
  NR == FNR { want($1); next }
  {
    installed[$1] = 1; deps[$1] = $5
    if ($2 == "yes" || $3 == "required") base[$1] = 1
    n = split($4, prov, ","); for (i = 1; i <= n; ++i) { v = name(prov[i]); if (v != "") providers[v] = providers[v] " " $1 }
  }
  END {
    for (p in base) want(p)
    for (head = 1; head <= tail; ++head) {
      p = queue[head]
      if (p in installed) {
        print p
        n = split(deps[p], groups, ",")
        for (i = 1; i <= n; ++i) { m = split(groups[i], alts, "|"); for (j = 1; j <= m; ++j) { a = name(alts[j]); if (a != "") want(a) } }
      } else {
        m = split(providers[p], ps, " "); for (j = 1; j <= m; ++j) want(ps[j])
      }
    }
  }' "$work/list" "$work/installed" | sort -u >"$work/allowed"

# 4. Every resolved path must come from an allowed package (any of its owners),
# or lie under an optional root.
awk -F'\t' -v optional="${OPTIONAL_ROOTS[*]}" '
  FILENAME == ARGV[1] { allowed[$1] = 1; next }
  FILENAME == ARGV[2] { owners[$1] = $2; next }
  {
    path = $1; why = $2
    if (!(path in owners)) {
      n = split(optional, roots, " "); opt = 0
      for (i = 1; i <= n; ++i) if (index(path, roots[i]) == 1) opt = 1
      if (!opt) print "  " path " (" why "): not from any Debian package"
      next
    }
    m = split(owners[path], ps, ","); ok = 0
    for (i = 1; i <= m; ++i) if (ps[i] in allowed) ok = 1
    if (!ok && !(owners[path] in reported)) { reported[owners[path]] = 1; print "  " owners[path] ": " path " (" why ")" }
  }' "$work/allowed" "$work/owned" "$work/paths" >"$work/bad"

checked=$(wc -l <"$work/paths")
if [[ -s $work/bad ]]; then
  {
    echo "check-build-deps: the build used packages that a fresh machine would not have:"
    cat "$work/bad"
    echo "They are neither in ${lists[*]} (in scripts/) nor pulled in by their packages' Depends (a Recommends is"
    echo "not installed). Add each package to scripts/debian-packages.txt, or make the build stop using it."
  } >&2
  exit 1
fi
echo "check-build-deps: $checked files the build resolved all come from ${lists[*]}, their Depends or the base system"
