#!/usr/bin/env bash
# Attack a locked MiniLM (and its base, and the from-scratch baseline) on three text tasks the lock never saw:
# full fine-tuning (the paper's text setting: AdamW 5e-5, weight decay 0.01, linear schedule) and LoRA r=8, then
# a small red team on one task. Small budgets for 2 CPU cores.
#   bash tools/minilm_attacks.sh LOCKED_DIR BASE_DIR OUT_DIR      (needs `make text-models`, `trainlock fetch bigbench`)
set -euo pipefail
LOCKED=$1; BASE=$2; OUT=${3:-runs/minilm-attacks}
T=trainlock
mkdir -p "$OUT"
run() { local name=$1; shift; /usr/bin/time -f "$name wall %e s, max RSS %M KB" -a -o "$OUT/times.txt" "$@"; }
COMMON=(--max-steps 100 --batch-size 16 --eval-every 25 --eval-samples 500 --train-samples 2000 --test-samples 1000
        --schedule linear --base "$BASE")
for task in bbc-news tweets-sentiment bb-epistemic; do
  run "attack-$task-adamw" $T attack "$LOCKED" --task $task --optimizer adamw --lr 5e-5 --weight-decay 0.01 \
      --scratch-lrs 1e-4 1e-3 "${COMMON[@]}" --json "$OUT/attack-$task-adamw.json" > "$OUT/attack-$task-adamw.txt" 2>&1
  run "attack-$task-lora" $T attack "$LOCKED" --task $task --optimizer adamw --lr 5e-4 --weight-decay 0.01 --lora 8 \
      --scratch-lrs 1e-3 "${COMMON[@]}" --json "$OUT/attack-$task-lora.json" > "$OUT/attack-$task-lora.txt" 2>&1
done
# the red team: adamw over three rates on the released weights and from scratch, merge and sv-clip after the two
# best, sv-clip insider, distillation, a fresh head (2 workers of one thread each; 100 steps per run)
run redteam $T redteam "$LOCKED" --task bbc-news --out "$OUT/redteam-bbc-news" --workers 2 --max-steps 100 \
    --batch-size 16 --train-samples 2000 --test-samples 1000 --schedule linear --optimizers adamw \
    --lrs 5e-5 1e-4 1e-3 --transforms merge sv-clip --json "$OUT/redteam-bbc-news.json" \
    > "$OUT/redteam-bbc-news.txt" 2>&1
cat "$OUT/times.txt"
