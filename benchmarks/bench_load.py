"""The quick demo alone, and beside one competing CPU-bound process, measured side by side in one run.

Before the CLI set its own thread policy, torch's OpenMP threads spun while waiting, and a second
busy process on a 2-core machine made the quick demo over 10x slower. Goal: ratio <= 2.5 on 2 cores.

    python benchmarks/bench_load.py [--spinning]   # --spinning: also the old policy (OMP_WAIT_POLICY=ACTIVE)

The competitor is a pure-Python busy loop (one core). Each case runs `trainlock demo --quick` in a fresh
process writing to a temporary directory; times are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

BUSY = "import time\nt = time.time()\nwhile time.time() - t < 3600:\n    pass\n"
# another torch job: matrix products on all cores, under the same thread policy as the demo
TORCH = (
    "import os, time, torch\ntorch.set_num_threads(len(os.sched_getaffinity(0)))\na = torch.randn(256, 256)\n"
    "t = time.time()\nwhile time.time() - t < 3600:\n    for _ in range(50):\n        a = torch.tanh(a @ a)\n"
)


def run_demo(env: dict, timeout: float) -> float | None:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        try:
            subprocess.run(
                [sys.executable, "-m", "trainlock.cli.main", "demo", "--quick", "--out", out],
                env=env,
                check=True,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - t0


def with_competitor(env: dict, timeout: float, code: str = BUSY) -> float | None:
    busy = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        return run_demo(env, timeout)
    finally:
        busy.kill()
        busy.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spinning", action="store_true", help="also time the old policy (OMP_WAIT_POLICY=ACTIVE)")
    ap.add_argument(
        "--competitor",
        choices=["python", "torch"],
        default="python",
        help="python: a busy loop on one core; torch: another torch job on all cores (same policy)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds per case before giving up")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    code = BUSY if args.competitor == "python" else TORCH
    what = "a busy Python loop" if args.competitor == "python" else "another torch job"
    alone = run_demo(base, args.timeout)
    passive = {**base, "OMP_WAIT_POLICY": "PASSIVE"}
    loaded = with_competitor(passive, args.timeout, code)
    print(f"quick demo, {cores} cores, the CLI's thread policy (passive waiting, {cores} threads)")
    print(
        f"  alone {alone:7.1f} s | beside {what} {loaded:7.1f} s | ratio {loaded / alone:5.2f} "
        f"(goal <= 2.5: {'ok' if loaded / alone <= 2.5 else 'MISS'})",
        flush=True,
    )
    if args.spinning:
        spin = with_competitor({**base, "OMP_WAIT_POLICY": "ACTIVE"}, args.timeout, code)
        shown = f"{spin:7.1f} s | ratio {spin / alone:5.2f}" if spin else f"> {args.timeout:.0f} s (timed out)"
        print(f"  old policy (spinning threads, both processes) beside {what}: {shown}")


if __name__ == "__main__":
    main()
