"""An 8-learning-rate SGD sweep batched with torch.func (vmap over stacked parameters) against the
same 8 runs one after another, measured side by side in one run. Goal: ratio >= 2 on small models.

Each model's two sweeps run --reps times in alternating order (one-by-one first, then vmap first, ...); the
medians are compared, so a noisy moment on a shared machine does not decide the ratio (a single shot moved the
CNN's ratio from 2.24x to 1.55x between two `make bench` runs).

    python benchmarks/bench_vmap_sweep.py [--steps 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from goals import report

import trainlock as tl
from trainlock.red_team.vmap_sweep import batched_sgd_sweep, sequential_sgd_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions of both sweeps (medians compared)")
    args = ap.parse_args()
    task = tl.tasks.get("digits")
    lrs = [10 ** (-4 + 3 * i / 7) for i in range(8)]  # 1e-4 .. 1e-1, log grid
    print(f"digits (8x8), {args.steps} SGD steps per lr, 8 lrs, threads {torch.get_num_threads()}")
    for name, kw in [
        ("mlp", {"hidden": [64, 64]}),
        ("cnn", {"channels": [8, 16], "hidden": 32}),
        ("transformer", {"dim": 32, "depth": 1, "heads": 2, "patch": 4}),
    ]:
        torch.manual_seed(0)
        model = tl.models.build(name, input_shape=[1, 8, 8], num_classes=10, **kw)
        times: dict[str, list[float]] = {"seq": [], "vmap": []}
        accs = {}
        sweeps = {"seq": sequential_sgd_sweep, "vmap": batched_sgd_sweep}
        for rep in range(args.reps):
            for kind in ("seq", "vmap") if rep % 2 == 0 else ("vmap", "seq"):
                t = time.perf_counter()
                accs[kind], _ = sweeps[kind](model, task, lrs, args.steps, args.batch_size)
                times[kind].append(time.perf_counter() - t)
        t_seq, t_vm = statistics.median(times["seq"]), statistics.median(times["vmap"])
        seq_acc, vm_acc = accs["seq"], accs["vmap"]
        diff = max(abs(a - b) for a, b in zip(seq_acc, vm_acc, strict=False))
        print(
            f"{name:>12}: sequential {t_seq:6.2f} s | vmap {t_vm:6.2f} s (medians of {args.reps}) | "
            f"ratio {t_seq / t_vm:5.2f} "
            f"(goal >= 2: {'ok' if t_seq / t_vm >= 2 else 'MISS'}) | max accuracy difference {diff:.4f}"
        )
        report(f"8-lr SGD sweep, one by one / vmap ({name})", t_seq / t_vm, ">=", 2.0)


if __name__ == "__main__":
    main()
