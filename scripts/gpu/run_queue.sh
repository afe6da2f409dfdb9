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
#                                  (--budget small too, unless RUN_OPTIONS name another)
#   cmd NAME SHELL_COMMAND...      any command (runs/gpu/NAME is $JOB, created for it)
# A kind written with a leading "&" (&side, &run, &cmd) starts that job in the background and
# goes on to the next line at once: the jobs run alongside, and packing waits for all of them.
# A job that finished here (runs/gpu/NAME.done) is skipped; the one running near the deadline is
# interrupted and its run folder stays resumable. Logs: runs/gpu/NAME.log. With $OUT
# set, every job's folder is packed, without weights and training states, into $OUT/NAME.tgz with
# its log; scripts/gpu/unpack_returned.sh puts those back into a checkout, which must happen
# before the next call wherever each call gets a fresh copy of the working tree (a result folder
# copied over with its old records would have its new cells trained again). On a machine kept
# between calls the queue also puts such records back itself, from the copy it keeps in
# .queue_kept/ (scripts/gpu/kept_records.py). The training states
# of cut-off cells come back inside NAME.tgz when small enough, and unpacking puts them back,
# so that the next call resumes those cells. The Triton kernel
# cache is packed too, without its intermediate forms (scripts/gpu/triton_cache.sh); carrying
# it (.triton_cache) spares a fresh machine of the same image the 1-3 minutes per model that
# compiling takes (the records' timings_s).
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$(( $(date +%s) + $1 )); queue="$2"
bad=$(awk '$1 !~ /^#/ && NF && $1 !~ /^&?(run|side|cmd)$/ {print NR": "$1; exit}' "$queue")
[[ -z "$bad" ]] || { echo "$queue line $bad: unknown job kind (run, side or cmd)" >&2; exit 2; }
mkdir -p runs/gpu
# "--budget small" unless the job's options name a budget (the CLI's own default is tiny).
default_budget() { [[ " $1 " == *" --budget "* ]] || echo "--budget small"; }
# One job: its command under the deadline, its log, and its .done marker when it succeeded.
run_job() {
  local kind="$1" name="$2" rest="$3" job="runs/gpu/$2" log="runs/gpu/$2.log" command
  if [[ "$kind" == run ]]; then
    job="results/gpu/$name"
    local gpus opts workers="" count
    read -r gpus opts <<<"$rest"
    if [[ "$gpus" == all ]]; then
      count=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
      gpus="-"; (( count > 1 )) && gpus=$(seq -s, 0 $(( count - 1 )))
    fi
    [[ "$gpus" != "-" ]] && workers="--gpus $gpus"
    if [[ -f "$job/config.yaml" ]]; then
      command="python3 -m bimix_bench run --resume $job $workers"
    else
      command="python3 -m bimix_bench run $(default_budget "$opts") --out $job $workers $opts"
    fi
  elif [[ "$kind" == side ]]; then
    job="results/gpu/$name"
    local models opts
    read -r models opts <<<"$rest"
    command="bash scripts/gpu/run_models_side_by_side.sh $job $models"
    command+=" $(default_budget "$opts") $opts"
  else
    mkdir -p "$job"; command="$rest"
  fi
  local left=$(( deadline - $(date +%s) )) start status
  # Records this machine made for the job in an earlier call, lost when that call's archive was
  # not unpacked before this call's copy of the folder replaced it (scripts/gpu/kept_records.py).
  [[ "$kind" != cmd ]] && python3 scripts/gpu/kept_records.py restore "$job" ".queue_kept/$name" \
    | tee -a "$log"
  echo "+ [$name, ${left}s left] $command" | tee -a "$log"
  echo "$job" >>runs/gpu/touched
  start=$(date +%s)
  JOB="$job" timeout -s INT -k 30 "$(( left - 35 ))" bash -c "$command" >>"$log" 2>&1
  status=$?
  echo "= $name: exit $status after $(( $(date +%s) - start ))s" | tee -a "$log"
  [[ "$kind" != cmd ]] && python3 scripts/gpu/kept_records.py keep "$job" ".queue_kept/$name"
  (( status == 0 )) && touch "runs/gpu/$name.done"
  return 0
}
while read -r kind name rest; do
  [[ -z "${kind:-}" || "$kind" == \#* ]] && continue
  [[ -f "runs/gpu/$name.done" ]] && { echo "= $name done"; continue; }
  # SIGINT lands 35 s before the deadline and SIGKILL 5 s before it: a job that is slow to stop
  # (e.g. interrupted inside a Triton compile) must not push the packing past the deadline.
  (( deadline - $(date +%s) > 65 )) || { echo "= $name: no time left"; break; }
  if [[ "$kind" == \&* ]]; then  # "&side", "&run", "&cmd": alongside the jobs that follow
    run_job "${kind#&}" "$name" "$rest" </dev/null &
  else
    run_job "$kind" "$name" "$rest" </dev/null
  fi
done <"$queue"
wait  # the jobs started alongside
if [[ -n "${OUT:-}" ]]; then
  bash scripts/gpu/triton_cache.sh pack "$OUT/triton_cache.tar.gz"
fi
if [[ -n "${OUT:-}" && -f runs/gpu/touched ]]; then
  for job in $(sort -u runs/gpu/touched); do
    name=$(basename "$job")
    # Cells trained but not yet timed (parked by `run --gpus` workers) and the training states
    # of cells cut off mid-way go in the same archive, up to 14 MB (a returned file holds at
    # most 16 MiB, and at most 8 files come back, so one archive per job;
    # scripts/gpu/returned_files.py picks them), so that a fresh machine times the parked
    # cells and resumes the cut-off ones instead of training them again. Finished cells leave
    # neither. The cpu budget's models leave about 2 MB each.
    parent=$(dirname "$job") picker="$PWD/scripts/gpu/returned_files.py"
    tar cf "$OUT/$name.tar" --exclude='*.tmp' --exclude='checkpoints' --exclude='pending' \
      --exclude='state' -C "$parent" "$name" \
      -C "$PWD/runs/gpu" $(cd runs/gpu && ls "$name.log" "$name.done" 2>/dev/null)
    resumable=$(cd "$parent" && python3 "$picker" "$name")
    [[ -n "$resumable" ]] && tar rf "$OUT/$name.tar" -C "$parent" $resumable
    gzip -c "$OUT/$name.tar" >"$OUT/$name.tgz" && rm -f "$OUT/$name.tar"
  done
fi
