#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end on CPU on a small step budget: train a classifier on rotten-tomatoes, lock it
# (the paper's text setting), verify, attack bbc-news (full AdamW and LoRA), and load the locked directory with
# transformers itself. Prints wall times; step times are in the command outputs.
#   bash tools/smollm2_e2e.sh OUT_DIR        (needs `make text-models`)
set -euo pipefail
OUT=${1:-runs/smollm2}
T=trainlock
mkdir -p "$OUT"
run() { local name=$1; shift; /usr/bin/time -f "$name wall %e s, max RSS %M KB" -a -o "$OUT/times.txt" "$@"; }
run train $T train --model smollm2-135m --task rotten-tomatoes --out "$OUT/base" --max-length 64 --optimizer adamw \
    --lr 5e-5 --schedule linear --max-steps 40 --batch-size 8 --train-samples 2000 --overwrite > "$OUT/train.txt" 2>&1
run lock $T lock "$OUT/base" --out "$OUT/locked" --retain ce+kl --alpha 0.99 --top-k 2 --optimizer adamw --lr 5e-5 \
    --weight-decay 0 --lr-gamma 0 --max-steps 20 --batch-size 8 --overwrite --json "$OUT/lock.json" > "$OUT/lock.txt" 2>&1
run verify $T verify "$OUT/locked" > "$OUT/verify.txt" 2>&1 || true
run attack-adamw $T attack "$OUT/locked" --task bbc-news --optimizer adamw --lr 5e-5 --schedule linear --max-steps 20 \
    --batch-size 8 --eval-every 10 --eval-samples 100 --train-samples 1000 --test-samples 200 \
    --json "$OUT/attack-adamw.json" > "$OUT/attack-adamw.txt" 2>&1
run attack-lora $T attack "$OUT/locked" --task bbc-news --optimizer adamw --lr 5e-4 --lora 8 --schedule linear \
    --max-steps 20 --batch-size 8 --eval-every 10 --eval-samples 100 --train-samples 1000 --test-samples 200 \
    --no-scratch --json "$OUT/attack-lora.json" > "$OUT/attack-lora.txt" 2>&1
python - "$OUT/locked" > "$OUT/from_pretrained.txt" 2>&1 <<'PY'
import sys, torch, trainlock as tl
from transformers import AutoModelForSequenceClassification
d = sys.argv[1]
hf = AutoModelForSequenceClassification.from_pretrained(d).eval()
ours, _ = tl.load(d)
x = tl.tasks.for_model(tl.tasks.get("rotten-tomatoes").subset(n_train=8, n_test=8), ours).x_test
with torch.no_grad():
    a, b = hf(input_ids=x[:, 0], attention_mask=x[:, 1]).logits, ours.eval()(x)
print(type(hf).__name__, "max |logit difference| transformers vs trainlock:", float((a - b).abs().max()))
PY
cat "$OUT/times.txt" "$OUT/from_pretrained.txt"
