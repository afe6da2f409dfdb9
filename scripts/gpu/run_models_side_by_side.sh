#!/usr/bin/env bash
# Train one `bimix-bench run` per model at the same time, each in its own folder, on one GPU:
#   bash scripts/gpu/run_models_side_by_side.sh OUT_DIR MODELS RUN_OPTIONS...
# e.g. OUT_DIR=runs/x MODELS=transformer,bimix RUN_OPTIONS="--budget cpu --task mqar". For models
# too small to fill a GPU (the cpu budget's 100K parameters) the processes overlap their Python
# dispatch. With WORKERS=N each model's run spreads its own cells over N worker processes on
# GPU 0 (`run --gpus 0,0,...`: a learning-rate grid's rates side by side, then its later seeds). A folder that already exists is resumed, so an interrupted
# call is continued by calling again. A model entry MODEL@KEY=VALUE trains MODEL with
# --set models.MODEL.KEY=VALUE into the folder MODEL_VALUE (e.g. multistate@pattern=sqrt; several
# options chain: hsa@window=16@chunk_size=8 goes into hsa_16_8). Each process gets
# OMP_NUM_THREADS=2; `compare` reads the folders together. With IN_TURN=1 the entries train one
# after another instead, in the order given (on a CPU, where they would only share its cores).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="$1"; models="$2"; shift 2
in_turn="${IN_TURN:-0}"
workers=()
if (( ${WORKERS:-1} > 1 )); then workers=(--gpus "$(printf '0,%.0s' $(seq "$WORKERS") | sed 's/,$//')"); fi
mkdir -p "$out"
pids=(); status=0
for entry in ${models//,/ }; do
  model="${entry%%@*}"; folder="$out/$model"; extra=()
  if [[ "$entry" == *@* ]]; then
    options="${entry#*@}"
    for option in ${options//@/ }; do
      folder="${folder}_${option#*=}"; extra+=(--set "models.$model.$option")
    done
  fi
  if [[ -f "$folder/config.yaml" ]]; then
    command=(python3 -m bimix_bench run --resume "$folder" "${workers[@]}")
  else
    command=(python3 -m bimix_bench run "$@" --models "$model" "${extra[@]}" --out "$folder" "${workers[@]}")
  fi
  OMP_NUM_THREADS=2 "${command[@]}" >"$folder.log" 2>&1 &
  pids+=($!)
  if [[ "$in_turn" == 1 ]]; then wait "$!" || status=$?; fi
done
[[ "$in_turn" == 1 ]] || for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
