#!/usr/bin/env bash
# Work through a queue of GPU jobs across time-limited sessions:
#   source scripts/gpu/setup_env.sh && bash scripts/gpu/run_queue.sh SECONDS QUEUE_FILE
# SECONDS is when everything, packing included, must be over: the running job gets SIGINT 35 s
# before it and SIGKILL 5 s before it. Leave the call's own start-up (setup_env.sh, about 15 s
# on a fresh machine) outside it: under a 600 s call limit, 540 is safe.
# QUEUE_FILE lines (blank lines and # comments are skipped):
#   run NAME GPUS RUN_OPTIONS...   bimix-bench run --budget small RUN_OPTIONS [--gpus GPUS] into
#                                  (RUN_OPTIONS may name another budget: --budget NAME)
#                                  results/gpu/NAME, or --resume it when the folder exists (so a
#                                  committed partial folder is continued, not started again);
#                                  GPUS "-" runs in this process, "all" spreads cells over every
#                                  visible GPU (in this process when there is only one)
#   side NAME MODELS RUN_OPTIONS... one `bimix-bench run` per model at once on one GPU
#                                  (scripts/gpu/run_models_side_by_side.sh) into
#                                  results/gpu/NAME/MODEL, each resumed when it exists
#   cmd NAME SHELL_COMMAND...      any command (runs/gpu/NAME is $JOB, created for it)
# A job that finished here (runs/gpu/NAME.done) is skipped; the one running near the deadline is
# interrupted and its run folder stays resumable. Logs: runs/gpu/NAME.log. With $OUT
# set, every job's folder is packed, without weights and training states, into $OUT/NAME.tgz with
# its log; scripts/gpu/unpack_returned.sh puts those back into a checkout, which must happen
# before the next call wherever each call gets a fresh copy of the working tree (a result folder
# copied over with its old records would have its new cells trained again). The training states
# of cut-off cells come back as NAME.state.tgz when small enough, and unpacking puts them back,
# so that the next call resumes those cells. The Triton kernel
# cache is packed too, without its intermediate forms (scripts/gpu/triton_cache.sh); carrying
# it (.triton_cache) spares a fresh machine of the same image the 1-3 minutes per model that
# compiling takes (the records' timings_s).
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$(( $(date +%s) + $1 )); queue="$2"
bad=$(awk '$1 !~ /^#/ && NF && $1 != "run" && $1 != "side" && $1 != "cmd" {print NR": "$1; exit}' "$queue")
[[ -z "$bad" ]] || { echo "$queue line $bad: unknown job kind (run, side or cmd)" >&2; exit 2; }
mkdir -p runs/gpu
while read -r kind name rest; do
  [[ -z "${kind:-}" || "$kind" == \#* ]] && continue
  [[ -f "runs/gpu/$name.done" ]] && { echo "= $name done"; continue; }
  left=$(( deadline - $(date +%s) ))
  # SIGINT lands 35 s before the deadline and SIGKILL 5 s before it: a job that is slow to stop
  # (e.g. interrupted inside a Triton compile) must not push the packing past the deadline.
  (( left > 65 )) || { echo "= $name: no time left"; break; }
  job="runs/gpu/$name"; log="$job.log"
  if [[ "$kind" == run ]]; then
    job="results/gpu/$name"
    read -r gpus opts <<<"$rest"
    if [[ "$gpus" == all ]]; then
      count=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
      gpus="-"; (( count > 1 )) && gpus=$(seq -s, 0 $(( count - 1 )))
    fi
    workers=""; [[ "$gpus" != "-" ]] && workers="--gpus $gpus"
    if [[ -f "$job/config.yaml" ]]; then
      command="python3 -m bimix_bench run --resume $job $workers"
    else
      budget="--budget small"; [[ " $opts " == *" --budget "* ]] && budget=""
      command="python3 -m bimix_bench run $budget --out $job $workers $opts"
    fi
  elif [[ "$kind" == side ]]; then
    job="results/gpu/$name"
    command="bash scripts/gpu/run_models_side_by_side.sh $job $rest"
  else
    mkdir -p "$job"; command="$rest"
  fi
  echo "+ [$name, ${left}s left] $command" | tee -a "$log"
  start=$(date +%s)
  JOB="$job" timeout -s INT -k 30 "$(( left - 35 ))" bash -c "$command" >>"$log" 2>&1
  status=$?
  echo "= $name: exit $status after $(( $(date +%s) - start ))s" | tee -a "$log"
  (( status == 0 )) && touch "runs/gpu/$name.done"
  echo "$job" >>runs/gpu/touched
done <"$queue"
if [[ -n "${OUT:-}" ]]; then
  bash scripts/gpu/triton_cache.sh pack "$OUT/triton_cache.tar.gz"
fi
if [[ -n "${OUT:-}" && -f runs/gpu/touched ]]; then
  for job in $(sort -u runs/gpu/touched); do
    name=$(basename "$job")
    tar czf "$OUT/$name.tgz" --exclude='*.pt' --exclude='state' --exclude='pending' \
      --exclude='checkpoints' -C "$(dirname "$job")" "$name" \
      -C "$PWD/runs/gpu" $(cd runs/gpu && ls "$name.log" "$name.done" 2>/dev/null)
    # The training states of cells cut off mid-way, when they are small (the cpu budget's
    # models: about 2 MB each), so that a fresh machine resumes them instead of starting over;
    # finished cells leave none. Larger ones stay behind (16 MiB a returned file).
    states=$(cd "$(dirname "$job")" && find "$name" -path '*/state/*' -type f 2>/dev/null)
    if [[ -n "$states" ]]; then
      tar czf "$OUT/$name.state.tgz" -C "$(dirname "$job")" $states
      if (( $(stat -c %s "$OUT/$name.state.tgz") > 12 * 1024 * 1024 )); then
        rm -f "$OUT/$name.state.tgz"; echo "= $name: training states too large to return; left behind"
      fi
    fi
  done
fi
