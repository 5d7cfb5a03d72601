"""Every speed and memory benchmark in one run, then each figure beside its goal (`make bench`).

The benchmarks run one after another, each in its own process (a quiet machine: two busy processes on 2 cores
make torch's spinning threads 10x slower, and the ratios only hold when nothing else runs). Each one's output
goes to OUT/NAME.txt; the lines it reports with `goals.report` are collected into OUT/summary.md and printed
last, with the machine's state (cores, load average before and after, torch version, date).

    python benchmarks/run_all.py [--out runs/bench] [--only NAME ...] [--skip NAME ...]

About 30 min on 2 cores (the default demo alone is about 10).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from goals import PREFIX

HERE = Path(__file__).resolve().parent
# (name, script arguments, extra environment): the order of `make bench`
BENCHES: list[tuple[str, list[str], dict[str, str]]] = [
    ("spectral", ["bench_spectral.py"], {}),
    ("specdef_step", ["bench_specdef_step.py"], {}),
    ("vmap_sweep", ["bench_vmap_sweep.py"], {}),
    ("hessian", ["bench_hessian.py"], {}),
    ("scale", ["bench_scale.py"], {}),
    ("precision", ["bench_precision.py"], {}),
    ("effnet", ["bench_effnet.py"], {}),
    ("text_lock", ["bench_text_lock.py"], {}),
    ("run_overhead", ["bench_run_overhead.py"], {"OMP_NUM_THREADS": "1"}),
    ("demo", ["bench_demo.py"], {}),
]


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench", help="directory for each benchmark's output and summary.md")
    ap.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these ({', '.join(b[0] for b in BENCHES)})")
    ap.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="leave these out")
    args = ap.parse_args()
    names = [b[0] for b in BENCHES]
    for n in (args.only or []) + args.skip:
        if n not in names:
            ap.error(f"unknown benchmark {n!r}; known: {', '.join(names)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    state = (
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average before: {_load()}"
    )
    print(state, flush=True)
    lines, walls = [], {}
    for name, script, env in BENCHES:
        if (args.only and name not in args.only) or name in args.skip:
            continue
        print(f"\n=== {name}: {' '.join(script)}", flush=True)
        t = time.perf_counter()
        with open(out / f"{name}.txt", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / script[0]), *script[1:]],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **env},
            )
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                if line.startswith(PREFIX):
                    lines.append(line.strip())
            rc = proc.wait()
        walls[name] = time.perf_counter() - t
        if rc:
            lines.append(f"{PREFIX} {name} | failed (exit {rc}; see {out / (name + '.txt')}) | - | MISS")
    rows = [[c.strip() for c in line[len(PREFIX) :].split("|")] for line in lines]
    summary = [
        "# make bench: each figure beside its goal",
        "",
        state + f"; after: {_load()}",
        "",
        "| figure | measured | goal | |",
        "|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        "Wall time per benchmark: " + ", ".join(f"{n} {s / 60:.1f} min" for n, s in walls.items()),
    ]
    text = "\n".join(summary) + "\n"
    (out / "summary.md").write_text(text)
    print("\n" + text, end="")
    na = sum(r[-1] == "n/a" for r in rows)
    met = sum(r[-1] == "ok" for r in rows)
    unmeasurable = f" ({na} not measurable on this machine)" if na else ""
    print(f"{met} of {len(rows) - na} goals met{unmeasurable}; written to {out / 'summary.md'}")


if __name__ == "__main__":
    main()
