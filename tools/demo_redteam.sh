#!/usr/bin/env bash
# Issue 12's headline table on the demo: the demo's MNIST CNN and its SpecDef lock, attacked on Fashion-MNIST by the
# staged suite (locked and base, with scratch and distillation starts), 300 steps per run as in notes/redteam.md;
# four optimizers (adam, sgd, adamw, kfac: the strongest plain one in issue 3), sv-clip and temperature-reset (the
# strongest transforms there), merge, rescale and reinit.
#   bash tools/demo_redteam.sh OUT_DIR [BUDGET]
set -euo pipefail
OUT=${1:-runs/demo-redteam}; BUDGET=${2:-60}
mkdir -p "$OUT"
[ -d "$OUT/demo/locked" ] || trainlock demo --out "$OUT/demo" > "$OUT/demo.txt" 2>&1
/usr/bin/time -f "redteam wall %e s, max RSS %M KB" -o "$OUT/times.txt" \
  trainlock redteam "$OUT/demo/locked" --task fashion-mnist --base "$OUT/demo/base" --out "$OUT/rt" \
    --max-steps 300 --batch-size 64 --budget "$BUDGET" --workers 2 --optimizers adam sgd adamw kfac \
    --transforms sv-clip temperature-reset merge rescale reinit --json "$OUT/rt.json" > "$OUT/rt.txt" 2>&1
cat "$OUT/rt.txt" "$OUT/times.txt"
