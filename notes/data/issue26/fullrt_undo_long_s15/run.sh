#!/bin/bash
cd /tmp/fr15
export PYTHONPATH=/tmp/wt15/src
date
/work/main/.venv/bin/python -m trainlock redteam /tmp/fr/out/undo-long/model --base /tmp/fr/base --task cifar10-animals \
  --retain-task cifar10-vehicles --seeds 0 1 2 --max-steps 40 --batch-size 32 --epochs 1000 \
  --train-samples 500 --test-samples 300 --optimizers adam sgd adamw muon --transforms sv-clip reinit \
  --budget 41 --workers 2 --out /tmp/fr15/undo-long-full --json /tmp/fr15/undo-long-full.json
echo rc=$?
date
