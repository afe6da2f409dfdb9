#!/usr/bin/env bash
# Work through a queue of GPU jobs across time-limited sessions:
#   source scripts/gpu/setup_env.sh && bash scripts/gpu/run_queue.sh SECONDS QUEUE_FILE
# QUEUE_FILE lines (blank lines and # comments are skipped):
#   run NAME GPUS RUN_OPTIONS...   bimix-bench run --budget small RUN_OPTIONS [--gpus GPUS] into
#                                  runs/gpu/NAME, or --resume it when the folder exists; GPUS
#                                  "-" runs in this process
#   cmd NAME SHELL_COMMAND...      any command (runs/gpu/NAME is $JOB, created for it)
# A job that finished (runs/gpu/NAME.done) is skipped; the one running at the deadline is
# interrupted with SIGINT (run folders stay resumable: the next session resumes them when
# runs/gpu travels back, e.g. with the device's `carry`). With $OUT set, every job folder is packed,
# without weights and training states, into $OUT/NAME.tgz with its log.
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$(( $(date +%s) + $1 )); queue="$2"
mkdir -p runs/gpu
while read -r kind name rest; do
  [[ -z "${kind:-}" || "$kind" == \#* ]] && continue
  [[ -f "runs/gpu/$name.done" ]] && { echo "= $name done"; continue; }
  left=$(( deadline - $(date +%s) ))
  (( left > 30 )) || { echo "= $name: no time left"; break; }
  job="runs/gpu/$name"
  if [[ "$kind" == run ]]; then
    read -r gpus opts <<<"$rest"
    workers=""; [[ "$gpus" != "-" ]] && workers="--gpus $gpus"
    if [[ -f "$job/config.yaml" ]]; then
      command="python3 -m bimix_bench run --resume $job $workers"
    else
      command="python3 -m bimix_bench run --budget small --out $job $workers $opts"
    fi
  else
    mkdir -p "$job"; command="$rest"
  fi
  echo "+ [$name, ${left}s left] $command" | tee -a "$job.log"
  start=$(date +%s)
  JOB="$job" timeout -s INT -k 30 "$left" bash -c "$command" >>"$job.log" 2>&1
  status=$?
  echo "= $name: exit $status after $(( $(date +%s) - start ))s" | tee -a "$job.log"
  (( status == 0 )) && touch "$job.done"
done <"$queue"
if [[ -n "${OUT:-}" ]]; then
  for job in runs/gpu/*/; do
    name=$(basename "$job")
    tar czf "$OUT/$name.tgz" --exclude='*.pt' --exclude='state' --exclude='pending' \
      -C runs/gpu "$name" $(cd runs/gpu && ls "$name.log" "$name.done" 2>/dev/null)
  done
fi
