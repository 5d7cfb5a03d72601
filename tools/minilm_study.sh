#!/usr/bin/env bash
# MiniLM-L6 on rotten-tomatoes: train, lock (the paper's text setting), attack on two other text tasks with
# full AdamW and LoRA, each beside the base and the from-scratch baseline. Small step budgets (2 CPU cores).
#   bash tools/minilm_study.sh OUT_DIR        (needs `make text-models`)
set -euo pipefail
OUT=${1:-runs/minilm-study}
T=trainlock
mkdir -p "$OUT"
run() { local name=$1; shift; /usr/bin/time -f "$name wall %e s, max RSS %M KB" -a -o "$OUT/times.txt" "$@"; }
run train $T train --model minilm-l6 --task rotten-tomatoes --out "$OUT/base" --max-length 64 \
    --optimizer adamw --lr 5e-5 --max-steps 300 --batch-size 32 --overwrite > "$OUT/train.txt" 2>&1
run lock $T lock "$OUT/base" --out "$OUT/locked" --retain ce+kl --alpha 0.99 --top-k 2 --max-steps 150 \
    --batch-size 32 --overwrite --json "$OUT/lock.json" > "$OUT/lock.txt" 2>&1
$T verify "$OUT/locked" > "$OUT/verify.txt" 2>&1 || true
for task in bbc-news tweets-sentiment; do
  run "attack-$task-adamw" $T attack "$OUT/locked" --task $task --optimizer adamw --lr 5e-5 --max-steps 100 \
      --batch-size 16 --eval-every 25 --base "$OUT/base" --json "$OUT/attack-$task-adamw.json" > "$OUT/attack-$task-adamw.txt" 2>&1
  run "attack-$task-lora" $T attack "$OUT/locked" --task $task --optimizer adamw --lr 5e-4 --lora 8 --max-steps 100 \
      --batch-size 16 --eval-every 25 --base "$OUT/base" --json "$OUT/attack-$task-lora.json" > "$OUT/attack-$task-lora.txt" 2>&1
done
cat "$OUT/times.txt"
