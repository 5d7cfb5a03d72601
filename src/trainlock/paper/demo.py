"""The demo (paper Table 1 in miniature): train on MNIST, lock, fine-tune on unauthorized tasks.

Prints authorized accuracy (base vs locked) and each unauthorized task's accuracy after each
attack (base vs locked), the strongest attack on the lock first; writes results.json,
curves.png and both models under `out`.

The lock setting (Adadelta lr 5, 5 epochs, alpha 0.5, k 1) is the best one found in a
measured sweep on MNIST -> Fashion-MNIST that keeps MNIST accuracy within one point
(notes/specdef-sweep.md); the paper's own setting is lr 1 for 10 epochs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import models, tasks
from ..api import attack, lock
from ..atomic import write_text
from ..attacks import FineTuneConfig
from ..io.artifacts import save
from ..locks import SpecDefConfig, specdef_loop
from ..plotting import accuracy_curves
from ..train import LoopConfig, evaluate, fit

logger = logging.getLogger(__name__)

UNAUTHORIZED = ("fashion-mnist", "fashion-mnist-permuted")


@dataclass
class Plan:
    """Sizes of one demo run."""

    n_train: int | None  # training examples per task (None: all)
    n_test: int | None
    base_epochs: int
    lock: SpecDefConfig
    attacks: list[FineTuneConfig] = field(default_factory=list)


def plan(quick: bool) -> Plan:
    lock = SpecDefConfig(loop=specdef_loop(optimizer="adadelta", lr=5.0, epochs=5, lr_gamma=0.7), alpha=0.5, top_k=1)
    attacks = [
        FineTuneConfig(loop=LoopConfig(optimizer="sgd", lr=1e-2)),
        FineTuneConfig(loop=LoopConfig(optimizer="adam", lr=1e-3)),
    ]
    if quick:
        for a in attacks:
            a.eval_every = 25
        return Plan(n_train=10_000, n_test=2_000, base_epochs=2, lock=lock, attacks=attacks)
    return Plan(n_train=None, n_test=None, base_epochs=2, lock=lock, attacks=attacks)


def _label(cfg: FineTuneConfig) -> str:
    return f"{cfg.loop.optimizer} lr={cfg.loop.lr:g}"


def run(quick: bool = False, out: str | Path = "runs/demo", progress: bool = True) -> dict:
    """Run the demo end to end; returns the results dict that is also written to out/results.json."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    p = plan(quick)
    out = Path(out)
    say = logger.info if progress else logger.debug

    mnist = tasks.get("mnist").subset(p.n_train, p.n_test)
    say(f"[1/4] training a CNN on MNIST ({len(mnist.y_train)} examples, {p.base_epochs} epochs)")
    base = models.build("cnn", input_shape=mnist.input_shape, num_classes=mnist.num_classes)
    fit(base, mnist, LoopConfig(optimizer="adadelta", lr=1.0, epochs=p.base_epochs, lr_gamma=0.7), progress=progress)
    base_acc = evaluate(base, mnist)
    say(f"      base MNIST accuracy {base_acc:.4f} (full test set, {len(mnist.y_test):,} images)")

    say(
        f"[2/4] locking with SpecDef (alpha={p.lock.alpha}, top_k={p.lock.top_k}, {p.lock.loop.optimizer} "
        f"lr={p.lock.loop.lr:g}, {p.lock.loop.epochs} epochs)"
    )
    res = lock(base, p.lock, retain=mnist, progress=progress)
    locked, record, rep = res.model, res.record, res.report
    say(
        f"      locked MNIST accuracy {rep.accuracy_after:.4f}; max sigma "
        f"{rep.sigma_before['max_sigma']:.3g} -> {rep.sigma_after['max_sigma']:.3g}"
    )
    cons = record["conservation"]
    say(
        f"      conservation ({cons['n_samples']:,} test images): accuracy drop {cons['accuracy']['drop']:.4f} "
        f"(epsilon {cons['epsilon']:g}: "
        f"{'holds' if cons['accuracy']['holds'] else 'FAILS'}), KL {cons['kl']['mean']:.3g}, "
        f"TV {cons['tv']['mean']:.3g} <= Pinsker {cons['tv']['pinsker_bound']:.3g}"
    )

    say(f"[3/4] fine-tuning base and locked on {', '.join(UNAUTHORIZED)}")
    rows, panels = [], {}
    for name in UNAUTHORIZED:
        task = tasks.get(name).subset(p.n_train, p.n_test)
        panels[name] = []
        for i, cfg in enumerate(p.attacks):
            pair = {}
            for who, model in (("base", base), ("locked", locked)):
                res = attack(model, cfg, task, progress=progress)
                pair[who] = res
                style = "-" if who == "locked" else "--"
                panels[name].append(
                    {
                        "label": f"{who}, {_label(cfg)}",
                        "evals": res.evals,
                        "style": style,
                        "color": f"C{i}",
                        "chance": task.chance,
                    }
                )
            rows.append(
                {
                    "task": name,
                    "attack": _label(cfg),
                    "chance": task.chance,
                    "base": pair["base"].accuracy,
                    "locked": pair["locked"].accuracy,
                    "base_steps_to_target": pair["base"].steps_to_target,
                    "locked_steps_to_target": pair["locked"].steps_to_target,
                    "locked_diverged": pair["locked"].diverged,
                    "target": cfg.target_accuracy,
                    "base_run": pair["base"].to_dict(),
                    "locked_run": pair["locked"].to_dict(),
                }
            )
            say(
                f"      {name:<24} {_label(cfg):<15} base {pair['base'].accuracy:.4f}  locked {pair['locked'].accuracy:.4f}"
            )

    rows.sort(key=lambda r: -r["locked"])  # the strongest attack on the lock first
    say("[4/4] results")
    out.mkdir(parents=True, exist_ok=True)
    save(base, out / "base", {"task": "mnist", "metrics": {"accuracy": base_acc}})
    save(locked, out / "locked", {"task": "mnist", "metrics": {"accuracy": rep.accuracy_after}, **record})
    curves = accuracy_curves(panels, out / "curves.png", title="Fine-tuning a base vs a SpecDef-locked MNIST CNN")
    results = {
        "quick": quick,
        "authorized": {"task": "mnist", "base": base_acc, "locked": rep.accuracy_after},
        "lock": rep.summary(),
        "certificates": record["certificates"],
        "conservation": record["conservation"],
        "unauthorized": rows,
        "wall_s": time.perf_counter() - t0,
    }
    write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True))
    results["written"] = {
        "results": str(out / "results.json"),
        "curves": str(curves),
        "models": [str(out / "base"), str(out / "locked")],
    }
    return results


def table(results: dict) -> str:
    """The Table-1 style summary as text."""
    a = results["authorized"]
    lines = [
        f"{'task':<26}{'attack':<16}{'base':>8}{'locked':>8}   steps to target (base / locked)",
        f"{'mnist (authorized)':<26}{'-':<16}{a['base']:>8.4f}{a['locked']:>8.4f}   (full test set)",
    ]
    for r in results["unauthorized"]:
        st = lambda v: "-" if v is None else str(v)
        flag = "  diverged" if r["locked_diverged"] else ""
        lines.append(
            f"{r['task']:<26}{r['attack']:<16}{r['base']:>8.4f}{r['locked']:>8.4f}   "
            f"{st(r['base_steps_to_target'])} / {st(r['locked_steps_to_target'])} "
            f"(target {r['target']:g}; chance {r['chance']:.2f}){flag}"
        )
    return "\n".join(lines)
