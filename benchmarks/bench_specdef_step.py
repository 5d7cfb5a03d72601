"""A SpecDef step versus a retain-only step on the demo model, measured side by side in one run.

Both steps use the same model, batch, optimizer (Adadelta) and loss; the SpecDef step adds the
spectral term (warm-started top-k of every Linear/Conv weight, one power iteration per step).
Timings alternate in blocks so both see the same machine state. Goal: ratio <= 1.10.

    python benchmarks/bench_specdef_step.py [--model cnn] [--batch-size 64] [--top-k 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from goals import report

import trainlock as tl
from trainlock.locks import find_lockable, spectral_term


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = tl.models.build(args.model, input_shape=[1, 28, 28], num_classes=10)
    x, y = torch.rand(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    lockables = find_lockable(model)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)

    def step(spec: bool) -> None:
        loss = F.cross_entropy(model(x), y)
        if spec:
            loss = 0.5 * loss - 0.5 * spectral_term(lockables, args.top_k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for spec in (False, True):
        for _ in range(5):
            step(spec)  # warm-up (and the spectral cold start)
    times = {False: [], True: []}
    ratios = []  # one per adjacent (retain-only, SpecDef) pair of blocks: robust to machine drift
    for b in range(args.blocks):
        pair = {}
        for spec in (False, True) if b % 2 == 0 else (True, False):
            t = time.perf_counter()
            for _ in range(args.steps):
                step(spec)
            pair[spec] = (time.perf_counter() - t) / args.steps
            times[spec].append(pair[spec])
        ratios.append(pair[True] / pair[False])
    base, spec = statistics.median(times[False]), statistics.median(times[True])
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4)
    print(
        f"model {args.model}, batch {args.batch_size}, top_k {args.top_k}, {len(lockables)} lockable weights, "
        f"threads {torch.get_num_threads()}"
    )
    print(
        f"retain-only step {base * 1e3:.2f} ms | SpecDef step {spec * 1e3:.2f} ms | ratio {ratio:.3f} "
        f"(median of {len(ratios)} paired blocks; quartiles {q[0]:.3f}-{q[2]:.3f}) "
        f"goal <= 1.10: {'ok' if ratio <= 1.10 else 'MISS'}"
    )
    report(f"SpecDef step / retain-only step ({args.model})", ratio, "<=", 1.10)


if __name__ == "__main__":
    main()
