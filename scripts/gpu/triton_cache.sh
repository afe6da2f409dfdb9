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
# A file that comes back from a call may hold 16 MiB, so the archive is kept under 15 MiB
# ($TRITON_CACHE_MAX_BYTES): when the whole cache is larger, only the most recently compiled
# kernels are packed (one folder per kernel; the job that was cut off and resumes first on the
# next machine compiled last), as many as fit, plus every folder that holds no kernel binary
# (autotuning results that fla's kernels cache, and metadata): a result spares a new process
# benchmarking every config of that kernel. (In the records, GLA's first validation at a new
# shape in a process took 90-126 s against 1-4 s otherwise: compiling and autotuning.)
set -euo pipefail
cache="${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
limit="${TRITON_CACHE_MAX_BYTES:-$(( 15 * 1024 * 1024 ))}"
action="${1:-}"; archive="${2:-}"
[[ -n "$action" && -n "$archive" ]] || { echo "usage: $0 pack|unpack ARCHIVE" >&2; exit 2; }
case "$action" in
  pack)
    [[ -d "$cache" ]] || { echo "no Triton cache at $cache; nothing packed"; exit 0; }
    pack() {
      tar czf "$archive" -C "$cache" --exclude='*.ttir' --exclude='*.ttgir' --exclude='*.llir' \
        --exclude='*.ptx' --exclude='*.source' --exclude='*.tmp.*' "$@"
      size=$(stat -c %s "$archive")
    }
    pack .
    kept="$(find "$cache" -name '*.cubin' | wc -l) kernels"
    if (( size > limit )); then
      # Folders without a cubin are small (autotuning results, metadata): they always travel.
      tuned=(); kernels=()
      while IFS= read -r folder; do
        if compgen -G "$cache/$folder*.cubin" >/dev/null; then kernels+=("$folder"); else tuned+=("$folder"); fi
      done < <(cd "$cache" && ls -1td -- */)  # newest first
      n=${#kernels[@]}
      while (( size > limit && n > 1 )); do
        n=$(( n * limit * 9 / (size * 10) ))  # shrink in proportion, with a 10% margin
        (( n >= 1 )) || break
        pack ${tuned[@]+"${tuned[@]}"} "${kernels[@]:0:n}"
      done
      kept="the newest $n of ${#kernels[@]} kernel folders, and all ${#tuned[@]} without one (autotuning results, metadata),"
    fi
    if (( size > limit )); then
      echo "Triton cache archive is $(( size >> 10 )) KiB, over $(( limit >> 10 )) KiB; not kept"
      rm -f "$archive"
    else
      echo "Triton cache: $kept packed in $(( size >> 10 )) KiB"
    fi ;;
  unpack)
    [[ -f "$archive" ]] || { echo "no Triton cache archive at $archive; kernels compile as usual"; exit 0; }
    mkdir -p "$cache"
    tar xzf "$archive" -C "$cache" --skip-old-files
    echo "Triton cache: $(find "$cache" -name '*.cubin' | wc -l) kernels at $cache" ;;
  *) echo "usage: $0 pack|unpack ARCHIVE" >&2; exit 2 ;;
esac
