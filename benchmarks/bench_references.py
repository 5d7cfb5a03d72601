"""Reference attackers' wall time beside the attack each is paired with, on the same data, in one run.

An uplift report runs the reference attackers beside the attacks on the released weights; this prints what each
costs relative to the attack it stands in for (ratio = its wall time / the paired attack's):

1. digits (sklearn 8x8, 1437 train / 360 test), a tiny MLP: one fine-tuning run of `--steps` (200) steps, AdamW
   at 1e-3, batch 32, beside the classical reference (logistic regression on pixels, C cross-validated; the
   small CNN at the same steps).
2. effnet-lite0 on cifar10-bb (300 train / 200 test, 30 steps at batch 32), when its weights are installed: the
   fine-tuning run and the probe (logistic regression on its frozen features) beside the classical reference and
   `alternative:effnet-lite1` (its probe, paired with the probe; AdamW at 1e-4 and 1e-3, paired with the run).
3. minilm-l6 on tweets-sentiment (300 / 200, 20 steps at batch 32), when installed: the fine-tuning run and the
   probe beside the classical reference (TF-IDF + logistic regression).

    OMP_NUM_THREADS=2 python benchmarks/bench_references.py [--quick] [--steps 200]

`--quick`: digits only. An alternative's rows include building it (its `build_s`, printed below the table).
"""

from __future__ import annotations

import argparse
import time

import torch

from trainlock import tasks
from trainlock.attacks.references import ReferenceTarget, run_reference
from trainlock.attacks.stages.probe import fit_probe
from trainlock.models import build
from trainlock.tasks import for_model
from trainlock.train import LoopConfig, accuracy, clone_model, fit

FINETUNE, PROBE = "fine-tune", "probe"


def finetune(model, task, steps: int, batch_size: int) -> tuple[float, float]:
    """(test accuracy, wall s) of one AdamW run at 1e-3 from a copy of `model`."""
    t0 = time.perf_counter()
    m = clone_model(model)
    loop = LoopConfig(optimizer="adamw", lr=1e-3, epochs=10**6, max_steps=steps, batch_size=batch_size, device="cpu")
    fit(m, task, loop, progress=False)
    return accuracy(m, task.x_test, task.y_test), time.perf_counter() - t0


def probe(model, task) -> tuple[float, float]:
    t0 = time.perf_counter()
    got = fit_probe(model, task.x_train, task.y_train.numpy(), task.x_test, task.y_test.numpy())
    return got["test_accuracy"], time.perf_counter() - t0


def references(name: str, target: ReferenceTarget, notes: list[str], **options) -> list[tuple]:
    """(run, accuracy, wall s, paired attack) per reference run; failures as rows, build times as notes."""
    rows = []
    for r in run_reference(name, target, **options):
        pair = PROBE if r.attacker.endswith(":probe") else FINETUNE
        rows.append(
            (r.attacker if not r.error else f"{r.attacker} (failed: {r.error[:60]})", r.accuracy, r.wall_s, pair)
        )
        who = r.attacker.rsplit(":", 1)[0]  # alternative:effnet-lite1
        if "build_s" in r.details and not any(n.startswith(f"{who}:") for n in notes):
            notes.append(f"{who}: building it took {r.details['build_s']:.1f} s (included in each of its rows)")
    return rows


def digits(steps: int, notes: list[str]) -> list[tuple]:
    task = tasks.get("digits")
    torch.manual_seed(0)
    model = build("mlp", input_shape=task.input_shape, num_classes=task.num_classes, hidden=[32])
    finetune(model, task, 1, 32)  # warm-up: the first run imports the optimizers and sets up the loop
    acc, wall = finetune(model, task, steps, 32)
    rows = [(f"fine-tune mlp adamw@0.001, {steps} steps", acc, wall, FINETUNE)]
    return rows + references("classical", ReferenceTarget(task, model, None, steps, 0), notes)


def effnet(notes: list[str]) -> list[tuple]:
    task = tasks.get("cifar10-bb").subset(300, 200, seed=0)
    torch.manual_seed(0)
    model = build("effnet-lite0", input_shape=task.input_shape, num_classes=task.num_classes)
    task = for_model(task, model)
    acc, wall = finetune(model, task, 30, 32)
    rows = [("fine-tune effnet-lite0 adamw@0.001, 30 steps", acc, wall, FINETUNE)]
    rows.append(("probe effnet-lite0", *probe(model, task), PROBE))
    target = ReferenceTarget(task, model, None, 30, 0)
    alternative = references("alternative:effnet-lite1", target, notes, device="cpu")  # on the CPU, as the attacks
    return rows + references("classical", target, notes) + alternative


def minilm(notes: list[str]) -> list[tuple]:
    text = tasks.get("tweets-sentiment").subset(300, 200, seed=0)
    torch.manual_seed(0)
    model = build("minilm-l6", num_classes=text.num_classes)
    task = for_model(text, model)
    acc, wall = finetune(model, task, 20, 32)
    rows = [("fine-tune minilm-l6 adamw@0.001, 20 steps", acc, wall, FINETUNE)]
    rows.append(("probe minilm-l6", *probe(model, task), PROBE))
    return rows + references("classical", ReferenceTarget(task, model, text, 20, 0), notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits only")
    ap.add_argument("--steps", type=int, default=200, help="digits: the fine-tuning run's and the CNN's steps")
    args = ap.parse_args()
    workloads = [("digits (mlp)", lambda n: digits(args.steps, n))]
    if not args.quick:
        workloads += [("effnet-lite0 / cifar10-bb", effnet), ("minilm-l6 / tweets-sentiment", minilm)]
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"| {'workload':<28} | {'run':<58} | accuracy | {'wall s':>7} | ratio to the paired attack |")
    print(f"|{'-' * 30}|{'-' * 60}|----------|---------|----------------------------|")
    notes: list[str] = []
    for label, fn in workloads:
        t0 = time.perf_counter()
        try:
            rows = fn(notes)
        except Exception as e:  # a model not installed: say so and go on
            print(f"| {label:<28} | skipped: {type(e).__name__}: {str(e)[:120]}")
            continue
        walls = {pair: wall for _run, _acc, wall, pair in rows[:2] if _run.startswith(pair)}
        for run, acc, wall, pair in rows:
            base = walls.get(pair)
            paired = "-" if run.startswith(pair) else f"{wall / base:.2f}x the {pair}" if base else "-"
            a = "-" if acc is None else f"{acc:.4f}"
            print(f"| {label:<28} | {run:<58} | {a:>8} | {wall:>7.2f} | {paired:<26} |")
        notes.append(f"{label}: {time.perf_counter() - t0:.0f} s in all")
    for n in notes:
        print(f"- {n}")


if __name__ == "__main__":
    main()
