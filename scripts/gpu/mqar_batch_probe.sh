#!/usr/bin/env bash
# How few sequences per step MQAR at the cpu budget can take: on two CPU cores a step costs in
# proportion to its tokens, so a smaller batch is what could bring a model's MQAR cells near 30
# minutes (docs/protocols.md, "What the cpu budget costs"). Trains the Transformer at 64 and 128
# sequences per step on both cpu settings, each rate of the grid on seed 0 and seeds 1-2 at
# 2.2e-3, under a 4,000-step cap, plus three other mixers at 64 sequences on (64, 4), one
# process per cell side by side on one GPU, into OUT_DIR/lrRATE/MODEL_bSEQUENCES_SUBTASK_seedN
# (one folder per rate, so that `bimix-bench compare OUT_DIR/lrRATE` pools seeds of one rate):
#   bash scripts/gpu/mqar_batch_probe.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
out="$1"; mkdir -p "$out"
cell() {  # NAME MODEL SUBTASK SEED LR SEQUENCES
  local folder="$out/lr$5/$1"; mkdir -p "$out/lr$5"
  if [[ -f "$folder/config.yaml" ]]; then
    OMP_NUM_THREADS=1 python3 -m bimix_bench run --resume "$folder" >"$folder.log" 2>&1 &
  else
    OMP_NUM_THREADS=1 python3 -m bimix_bench run --budget cpu --task mqar --models "$2" \
      --subtasks "$3" --seeds "$4" --set 'train.lr_grid=[]' --set train.lr="$5" \
      --set train.batch_sequences="$6" --set train.steps=4000 --out "$folder" >"$folder.log" 2>&1 &
  fi
}
for sequences in 64 128; do
  for subtask in T64_kv4 T128_kv8; do
    for lr in 0.00046 0.0022 0.01; do
      cell "transformer_b${sequences}_${subtask}_seed0" transformer "$subtask" 0 "$lr" "$sequences"
    done
  done
done
for subtask in T64_kv4 T128_kv8; do
  for seed in 1 2; do
    cell "transformer_b64_${subtask}_seed${seed}" transformer "$subtask" "$seed" 0.0022 64
  done
done
cell mamba2_b64_T64_kv4_seed0 mamba2 T64_kv4 0 0.01 64
cell bimix_b64_T64_kv4_seed0 bimix T64_kv4 0 0.01 64
cell linear_attn_b64_T64_kv4_seed0 linear_attn T64_kv4 0 0.01 64
wait
