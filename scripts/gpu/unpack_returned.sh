#!/usr/bin/env bash
# Put the job archives that scripts/gpu/run_queue.sh packed into $OUT back into this checkout:
#   bash scripts/gpu/unpack_returned.sh QUEUE_FILE DIR_WITH_TGZ_FILES
# `run` and `side` jobs go to results/gpu/NAME, `cmd` jobs to runs/gpu/NAME; logs and NAME.done
# markers to runs/gpu/ (so the next session skips finished jobs when runs/gpu travels with it).
# Do this after every GPU call whose machine gets the working tree copied afresh: the next call
# would otherwise start from the result folders as they were before this one, and train their
# cells again.
set -euo pipefail
cd "$(dirname "$0")/../.."
queue="$1"; from="$2"
mkdir -p runs/gpu results/gpu
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
lines() { if [[ -f "$1" ]]; then wc -l < "$1"; else echo 0; fi; }  # 0 for a job without records
if [[ -f "$from/triton_cache.tar.gz" ]]; then  # carried to the next machine as .triton_cache
  mkdir -p .triton_cache && cp "$from/triton_cache.tar.gz" .triton_cache/
  echo "triton_cache.tar.gz -> .triton_cache/ (carry it to a fresh machine)"
fi
for archive in "$from"/*.tgz; do
  [[ -e "$archive" ]] || { echo "no .tgz files in $from" >&2; exit 1; }
  [[ "$archive" == *.state.tgz ]] && continue  # after the job's own archive, below
  name=$(basename "$archive" .tgz)
  kind=$(awk -v n="$name" '$1 !~ /^#/ && $2 == n {print $1; exit}' "$queue"); kind="${kind#&}"
  case "$kind" in
    run|side) dest=results/gpu ;;
    cmd) dest=runs/gpu ;;
    *) echo "$name: not a job of $queue; left alone" >&2; continue ;;
  esac
  mkdir -p "$scratch/$name" && tar xzf "$archive" -C "$scratch/$name"
  if (( $(lines "$scratch/$name/$name/records.jsonl") < $(lines "$dest/$name/records.jsonl") )); then
    echo "$name: $archive holds fewer records than $dest/$name (an older call?); left alone" >&2
    continue
  fi
  if [[ -d "$scratch/$name/$name" ]]; then
    mkdir -p "$dest/$name"
    cp -R "$scratch/$name/$name/." "$dest/$name/"
  fi
  for extra in "$name.log" "$name.done"; do
    [[ -f "$scratch/$name/$extra" ]] && cp "$scratch/$name/$extra" runs/gpu/
  done
  # Cut-off cells' training states (inside the archive; a separate NAME.state.tgz from older
  # calls): the next call resumes those cells from them.
  if [[ -f "$from/$name.state.tgz" ]]; then
    tar xzf "$from/$name.state.tgz" -C "$dest"
  fi
  if [[ -f "$from/$name.state.tgz" ]] || [[ -n "$(find "$scratch/$name" -path '*/state/*' -type f 2>/dev/null | head -1)" ]]; then
    echo "$name: training states of cut-off cells restored"
  fi
  records=$(lines "$dest/$name/records.jsonl")
  echo "$name -> $dest/$name${records:+ ($records records)}$([[ -f runs/gpu/$name.done ]] && echo ', done')"
done
