"""Full svdvals versus the warm-started top-k op, measured side by side in one run.

For each shape: a cold start on W, then W takes a small training-like step (relative size 1e-3)
and the op is called once, warm. Reported: median times, their ratio, and the relative error of
the warm top-k values against svdvals of the stepped matrix. Goal: ratio >= 100 at error <= 1e-3.

    python benchmarks/bench_spectral.py [--device cuda] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from goals import report

from trainlock.linalg.spectral import top_singular_values


def _time(fn, reps: int, device: torch.device) -> float:
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(shape: tuple[int, int], k: int, reps: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(*shape, generator=g).to(device) / shape[1] ** 0.5
    _, state = top_singular_values(W, k)  # warm-up: cold start to tolerance
    W = W + 1e-3 * torch.randn(*shape, generator=g).to(device) / shape[1] ** 0.5  # one small step
    ref = torch.linalg.svdvals(W)[:k]
    sigma, _ = top_singular_values(W, k, state)
    err = float(((sigma - ref).abs() / ref).max())
    t_full = _time(lambda: torch.linalg.svdvals(W), max(1, reps // 2), device)
    t_topk = _time(lambda: top_singular_values(W, k, state), reps * 4, device)
    return {
        "shape": shape,
        "k": k,
        "svdvals_s": t_full,
        "topk_s": t_topk,
        "ratio": t_full / t_topk,
        "rel_err": err,
        "cold_iters": state.iters,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"{'shape':>12} {'k':>3} {'svdvals ms':>11} {'top-k ms':>9} {'ratio':>8} {'rel err':>9} {'cold iters':>10}  goal: ratio>=100, err<=1e-3"
    )
    for shape in ((768, 3072), (4096, 4096)):
        for k in (1, 8):
            r = bench(shape, k, args.reps, device)
            ok = "ok" if r["ratio"] >= 100 and r["rel_err"] <= 1e-3 else "MISS"
            print(
                f"{'x'.join(map(str, shape)):>12} {k:>3} {r['svdvals_s'] * 1e3:>11.1f} {r['topk_s'] * 1e3:>9.2f} "
                f"{r['ratio']:>8.0f} {r['rel_err']:>9.1e} {r['cold_iters']:>10}  {ok}"
            )
            name = f"warm top-{k} singular values {'x'.join(map(str, shape))}"
            report(f"{name}: svdvals time / top-k time", r["ratio"], ">=", 100)
            report(f"{name}: relative error", r["rel_err"], "<=", 1e-3, unit="")


if __name__ == "__main__":
    main()
