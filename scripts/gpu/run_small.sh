#!/usr/bin/env bash
# A small-budget sweep on a GPU that may take several time-limited sessions:
#   bash scripts/gpu/run_small.sh NAME SECONDS -- RUN_OPTIONS...
# Starts runs/gpu/NAME with `bimix-bench run --budget small RUN_OPTIONS`, or resumes it when it
# exists; after SECONDS it is interrupted (SIGINT: the run folder stays consistent and resumable).
# With $OUT set, the folder is packed without checkpoints into $OUT/NAME.tgz and the log copied.
set -uo pipefail
cd "$(dirname "$0")/../.."
name="$1"; seconds="$2"; shift 2
[[ "${1:-}" == "--" ]] && shift
folder="runs/gpu/$name"
mkdir -p runs/gpu
if [[ -f "$folder/config.yaml" ]]; then
  cmd=(python3 -m bimix_bench run --resume "$folder")
else
  cmd=(python3 -m bimix_bench run --budget small --out "$folder" "$@")
fi
echo "+ ${cmd[*]}"
timeout -s INT -k 30 "$seconds" "${cmd[@]}" 2>&1 | tee -a "runs/gpu/$name.log"
status=${PIPESTATUS[0]}
if [[ -n "${OUT:-}" ]]; then
  tar czf "$OUT/$name.tgz" --exclude='*.pt' --exclude='state' -C runs/gpu "$name" "$name.log"
fi
exit "$status"
