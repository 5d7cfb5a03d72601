#!/usr/bin/env bash
# Cost to lock, per lock spec: wall time and the process's peak resident memory (GNU time), one lock per
# process so the peaks do not mix. Baseline row: the same process loading the model and task and exiting.
#   bash tools/lock_costs.sh MODEL_DIR SPECS.json OUT_DIR [extra `trainlock lock` flags, e.g. --train-samples 10000]
set -euo pipefail
model=$1; specs=$2; out=$3; shift 3
mkdir -p "$out"
python - "$specs" "$out" <<'PY'
import json, sys, pathlib
specs = json.loads(pathlib.Path(sys.argv[1]).read_text())
for i, (name, spec) in enumerate(specs.items()):
    if spec is not None:
        pathlib.Path(sys.argv[2], f"spec{i}.json").write_text(json.dumps(spec))
        pathlib.Path(sys.argv[2], f"spec{i}.name").write_text(name)
PY
printf "%-45s %10s %12s\n" "lock" "wall s" "peak RSS MB"
/usr/bin/time -f "%e %M" -o "$out/base.time" trainlock eval "$model" --test-samples 2000 >/dev/null 2>&1 || true
read -r w m < "$out/base.time"; printf "%-45s %10s %12d\n" "(no lock: load, evaluate 2000 test samples)" "$w" $((m / 1024))
for f in "$out"/spec*.json; do
  n=$(cat "${f%.json}.name")
  /usr/bin/time -f "%e %M" -o "${f%.json}.time" trainlock lock "$model" --spec "$f" --out "${f%.json}.model" \
    --overwrite "$@" >"${f%.json}.log" 2>&1 || { echo "$n: failed (see ${f%.json}.log)"; continue; }
  read -r w m < "${f%.json}.time"; printf "%-45s %10s %12d\n" "$n" "$w" $((m / 1024))
done
