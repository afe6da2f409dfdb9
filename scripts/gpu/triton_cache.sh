#!/usr/bin/env bash
# Carry compiled Triton kernels from one GPU machine to the next of the same image, so a fresh
# machine does not spend its first minutes compiling (1-3 minutes per model, from the records'
# timings_s):
#   bash scripts/gpu/triton_cache.sh pack ARCHIVE     # on a machine that has compiled them
#   bash scripts/gpu/triton_cache.sh unpack ARCHIVE   # on a fresh one, before any job
# Only what a launch needs travels: each kernel's cubin, its metadata and the group file that
# indexes them. The intermediate forms (ttir, ttgir, llir, ptx, source) are left out; they are
# most of the cache's size. Triton's group files name their members by absolute path, so the
# cache is restored at the path it was packed from (the default, or $TRITON_CACHE_DIR when set).
# An archive over the size that may come back from a call (15 MiB) is not written.
set -euo pipefail
cache="${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
action="${1:-}"; archive="${2:-}"
[[ -n "$action" && -n "$archive" ]] || { echo "usage: $0 pack|unpack ARCHIVE" >&2; exit 2; }
case "$action" in
  pack)
    [[ -d "$cache" ]] || { echo "no Triton cache at $cache; nothing packed"; exit 0; }
    tar czf "$archive" -C "$cache" --exclude='*.ttir' --exclude='*.ttgir' --exclude='*.llir' \
      --exclude='*.ptx' --exclude='*.source' --exclude='*.tmp.*' .
    size=$(stat -c %s "$archive")
    if (( size > 15 * 1024 * 1024 )); then
      echo "Triton cache archive is $(( size >> 20 )) MiB, over 15 MiB; not kept"; rm -f "$archive"
    else
      echo "Triton cache: $(find "$cache" -name '*.cubin' | wc -l) kernels packed in $(( size >> 10 )) KiB"
    fi ;;
  unpack)
    [[ -f "$archive" ]] || { echo "no Triton cache archive at $archive; kernels compile as usual"; exit 0; }
    mkdir -p "$cache"
    tar xzf "$archive" -C "$cache" --skip-old-files
    echo "Triton cache: $(find "$cache" -name '*.cubin' | wc -l) kernels at $cache" ;;
  *) echo "usage: $0 pack|unpack ARCHIVE" >&2; exit 2 ;;
esac
