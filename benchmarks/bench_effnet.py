"""EfficientNet-Lite0 (`effnet-lite0`) on this machine: throughput, and what a SpecDef lock step costs over fine-tuning.

1. Images/s at `--size` px (96), batch `--batch-size` (64): a fine-tuning step (cross-entropy, Adam at 1e-3: the
   attack's default) and feature extraction (`trainlock.models.pooled_features`: eval, no grad), each in fp32
   and under bf16 autocast, with the model's default channels_last layout; then both in fp32 with NCHW.
2. Feature extraction images/s at `--sizes` px (64, 96, 128, 224): what the model's `size` costs.
3. A SpecDef lock step (the lock's defaults: cross-entropy retain at alpha 0.5 minus the top-1 singular value
   of every conv and the head, warm-started power iteration, Adadelta at lr 1) against the fine-tuning step, in
   alternating blocks on one batch. Goal: lock step <= 1.10x the fine-tuning step.
4. Peak memory of `--steps` steps of each, every one in a fresh process, the peak reset after the model is built
   (Linux: `/proc/self/clear_refs` 5 resets VmHWM; as benchmarks/bench_text_lock.py). Goal: lock <= 1.25x.

    python benchmarks/bench_effnet.py [--batch-size 64] [--size 96] [--steps 3] [--blocks 6] [--reps 3]

Inputs are random 32x32 RGB images (CIFAR-sized, resized by the model). The ImageNet weights are used when
the weights package is installed (`make models`), else random weights of the same network: the cost is the same.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from goals import report
from memory import reset_peak, status_mb

from trainlock.locks import find_lockable, spectral_term
from trainlock.models import build, pooled_features
from trainlock.models.effnet import has_weights

PRETRAINED = has_weights()


def make(size: int, channels_last: bool = True):
    torch.manual_seed(0)
    return build(
        "effnet-lite0",
        input_shape=(3, 32, 32),
        num_classes=10,
        size=size,
        pretrained=PRETRAINED,
        channels_last=channels_last,
    )


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def stepper(model, x, y, kind: str, bf16: bool = False):
    """One optimizer step as a closure: "finetune" (cross-entropy, Adam at 1e-3) or "lock" (SpecDef's defaults:
    0.5 * cross-entropy - 0.5 * top-1 sigma of every lockable weight, Adadelta at lr 1)."""
    model.train()
    if kind == "finetune":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        lockables = find_lockable(model)
        opt = torch.optim.Adadelta(model.parameters(), lr=1.0)

    def step() -> None:
        with autocast(bf16):
            loss = F.cross_entropy(model(x), y)
        if kind == "lock":
            loss = 0.5 * loss - 0.5 * spectral_term(lockables, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def rate(fn, n: int, reps: int) -> float:
    """Images/s of `fn` (which handles `n` images): median of `reps` timed calls after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def throughput(args) -> None:
    x, y = batch(args.batch_size)
    for channels_last in (True, False):
        precisions = (False, True) if channels_last else (False,)
        for bf16 in precisions:
            model = make(args.size, channels_last)
            tag = f"{'bf16 autocast' if bf16 else 'fp32'}, {'channels_last' if channels_last else 'NCHW'}"
            step = rate(stepper(model, x, y, "finetune", bf16), len(x), args.reps)
            with autocast(bf16):
                feats = rate(lambda m=model: pooled_features(m, x, batch_size=len(x)), len(x), args.reps)
            print(
                f"  {args.size} px, batch {len(x)}, {tag}: fine-tuning step {step:.0f} images/s | "
                f"feature extraction {feats:.0f} images/s",
                flush=True,
            )
    parts = []
    for size in args.sizes:
        model = make(size)
        parts.append(
            f"{size} px {rate(lambda m=model: pooled_features(m, x, batch_size=len(x)), len(x), args.reps):.0f}"
        )
    print(f"  feature extraction (fp32, channels_last, batch {len(x)}), images/s: {' | '.join(parts)}", flush=True)


def timing(args) -> None:
    model = make(args.size)
    x, y = batch(args.batch_size)
    steps = {kind: stepper(model, x, y, kind) for kind in ("finetune", "lock")}
    for s in steps.values():
        s()  # warm-up: optimizer state, the power iteration's cold start
    ratios, times = [], {"finetune": [], "lock": []}
    for b in range(args.blocks):
        pair = {}
        for kind in ("finetune", "lock") if b % 2 == 0 else ("lock", "finetune"):
            t = time.perf_counter()
            for _ in range(args.steps):
                steps[kind]()
            pair[kind] = (time.perf_counter() - t) / args.steps
            times[kind].append(pair[kind])
        ratios.append(pair["lock"] / pair["finetune"])
    r = statistics.median(ratios)
    print(
        f"  step time ({len(find_lockable(model))} lockable weights, {args.size} px, batch {len(x)}, fp32): "
        f"fine-tuning (Adam) {statistics.median(times['finetune']):.3f} s | SpecDef lock (Adadelta, spectral term) "
        f"{statistics.median(times['lock']):.3f} s | ratio {r:.3f} (median of {len(ratios)} paired blocks of "
        f"{args.steps}) goal <= 1.10: {'ok' if r <= 1.10 else 'MISS'}",
        flush=True,
    )
    report("EfficientNet-Lite0 SpecDef lock step / fine-tuning step", r, "<=", 1.10)


def child(args) -> None:
    """In a fresh process: build, reset the peak, run the steps, print (resident MB after building, peak MB)."""
    model = make(args.size)
    x, y = batch(args.batch_size)
    gc.collect()
    reset_peak()
    loaded = status_mb("VmRSS")
    step = stepper(model, x, y, args.child)
    for _ in range(args.steps):
        step()
    print(loaded, status_mb("VmHWM"))


def peak(args, kind: str) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--child", kind, "--size", str(args.size)]
    cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    loaded, top = out.stdout.split()[-2:]
    return float(loaded), float(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=96, help="the model's input size in px")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 224], help="sizes for feature extraction")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per throughput figure (median)")
    ap.add_argument("--blocks", type=int, default=6, help="alternating timed blocks, fine-tuning vs lock")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed block (and per memory run)")
    ap.add_argument("--child", choices=["finetune", "lock"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"effnet-lite0 ({'ImageNet' if PRETRAINED else 'random'} weights), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}",
        flush=True,
    )
    throughput(args)
    timing(args)
    (fl, fine), (ll, lock) = peak(args, "finetune"), peak(args, "lock")
    print(
        f"  peak memory during {args.steps} steps (VmHWM reset after building; resident after building "
        f"{fl:.0f} / {ll:.0f} MB): fine-tuning (Adam) {fine:.0f} MB | SpecDef lock (Adadelta) {lock:.0f} MB | "
        f"ratio {lock / fine:.3f} goal <= 1.25: {'ok' if lock / fine <= 1.25 else 'MISS'}; above the built model: "
        f"{fine - fl:.0f} / {lock - ll:.0f} MB"
    )
    report("EfficientNet-Lite0 lock peak memory / fine-tuning peak", lock / fine, "<=", 1.25)


if __name__ == "__main__":
    main()
