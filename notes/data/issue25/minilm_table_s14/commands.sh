# the MiniLM lock table's red-team cell (8 runs, AdamW 1e-4/1e-3, sv-clip, temperature-reset, bbc-news 600/300,
# batch 16): pre-issue-25 code at 40 steps vs today's at 120 steps, one after the other on a quiet machine
T=/work/main/.venv/bin/trainlock
ARGS="--task bbc-news --train-samples 600 --test-samples 300 --budget 8 --epochs 10 --batch-size 16 --optimizers adamw --lrs 1e-4 1e-3 --transforms sv-clip temperature-reset --workers 2"
uptime
cd /tmp/wt_old; s=$(date +%s.%N)
PYTHONPATH=/tmp/wt_old/src $T redteam /tmp/f14/minilm_base $ARGS --max-steps 40 --out /tmp/f14/mt_old40 > /tmp/f14/mt_old40.log 2>&1
e=$(date +%s.%N); echo "old f753f2c, 40 steps: $(echo "$e - $s" | bc) s rc=$?"
cd /tmp/wt; s=$(date +%s.%N)
PYTHONPATH=/tmp/wt/src $T redteam /tmp/f14/minilm_base $ARGS --max-steps 120 --out /tmp/f14/mt_new120 > /tmp/f14/mt_new120.log 2>&1
e=$(date +%s.%N); echo "new $(git -C /tmp/wt rev-parse --short HEAD), 120 steps: $(echo "$e - $s" | bc) s rc=$?"
uptime
