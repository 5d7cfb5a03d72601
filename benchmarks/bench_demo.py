"""Wall time of `trainlock demo --quick` and `trainlock demo` (what `make quick` and `make demo` run after
set-up), each in a fresh process writing to a temporary directory, with the demo's own per-stage times (its
results.json "stages"). Goals: quick <= 2 min, default <= 10 min on 2 CPU cores, on a quiet machine (identical
runs vary 10-20% on this VM).

    python benchmarks/bench_demo.py [--only quick|default] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goals import report

PLANS = {"quick": (["--quick"], 120.0), "default": ([], 600.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(PLANS), help="time one plan only")
    ap.add_argument("--keep", metavar="DIR", help="copy each run's results.json here (DIR/results_PLAN.json)")
    args = ap.parse_args()
    cli = Path(sys.executable).with_name("trainlock")
    for plan, (flags, goal) in PLANS.items():
        if args.only and plan != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-demo-{plan}-") as tmp:
            t = time.perf_counter()
            proc = subprocess.run([str(cli), "demo", *flags, "--out", tmp], capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode:
                print(proc.stdout[-2000:] + proc.stderr[-2000:])
                raise SystemExit(f"trainlock demo {' '.join(flags)} failed (exit {proc.returncode})")
            results = Path(tmp) / "results.json"
            stages = json.loads(results.read_text()).get("stages", {}) if results.is_file() else {}
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(results, Path(args.keep) / f"results_{plan}.json")
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in stages.items() if isinstance(v, (int, float)))
        print(f"trainlock demo {' '.join(flags) or '(default)'}: {wall:.0f} s ({parts})", flush=True)
        report(f"`make {'quick' if plan == 'quick' else 'demo'}` wall time", wall, "<=", goal, unit=" s")


if __name__ == "__main__":
    main()
