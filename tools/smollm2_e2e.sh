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
[ -d "$OUT/base" ] || run train $T train --model smollm2-135m --task rotten-tomatoes --out "$OUT/base" --max-length 64 --optimizer adamw \
    --lr 5e-5 --schedule linear --max-steps 40 --batch-size 8 --train-samples 2000 --overwrite > "$OUT/train.txt" 2>&1
# the lock's before / after evaluations and its conservation certificate (every leaf layer of two 135M models) on the
# whole rotten-tomatoes test split took over 20 minutes here: lock on a 400 / 100 sample cut of it instead
python - "$OUT/rt-small.csv" <<'PY'
import csv, sys, trainlock.tasks as T
t = T.get("rotten-tomatoes").subset(n_train=400, n_test=100, seed=0)
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["text", "label", "split"])
    w.writeheader()
    for split, texts, labels in (("train", t.texts_train, t.labels_train), ("test", t.texts_test, t.labels_test)):
        w.writerows({"text": x, "label": t.label_names[y], "split": split} for x, y in zip(texts, labels))
PY
run lock $T lock "$OUT/base" --out "$OUT/locked" --retain-task "csv:$OUT/rt-small.csv" --retain ce+kl --alpha 0.99 \
    --top-k 2 --optimizer adamw --lr 5e-5 --weight-decay 0 --lr-gamma 0 --max-steps 10 --batch-size 8 --overwrite \
    --json "$OUT/lock.json" > "$OUT/lock.txt" 2>&1
run verify $T verify "$OUT/locked" > "$OUT/verify.txt" 2>&1 || true
run attack-adamw $T attack "$OUT/locked" --task bbc-news --optimizer adamw --lr 5e-5 --schedule linear --max-steps 10 \
    --batch-size 8 --eval-every 5 --eval-samples 100 --train-samples 1000 --test-samples 200 \
    --json "$OUT/attack-adamw.json" > "$OUT/attack-adamw.txt" 2>&1
run attack-lora $T attack "$OUT/locked" --task bbc-news --optimizer adamw --lr 5e-4 --lora 8 --schedule linear \
    --max-steps 10 --batch-size 8 --eval-every 5 --eval-samples 100 --train-samples 1000 --test-samples 200 \
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
