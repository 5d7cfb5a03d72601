"""The demo: a pretrained vision model, where the released weights give an attacker a real lead.

1. fine-tune ImageNet-pretrained EfficientNet-Lite0 (offline weights) on CIFAR-10's vehicles (`cifar10-vehicles`:
   airplane, automobile, ship, truck): the authorized task;
2. lock it with SpecDef (alpha 0.5, top-k 1, retain ce+kl, AdamW; every conv and the head);
3. attack held-back tasks the lock never saw, where the unlocked base leads the best reference attacker: CIFAR-10's
   animals (`cifar10-animals`, +34 points from 500 images) and animal-mnist (+20; `trainlock headstart effnet-lite0
   --task T`, notes/uplift.md; --quick attacks the first only), with the same small red team on
   the locked model and on the base: Adam from the released weights, the probe (logistic regression on frozen
   features), and every run's twin from scratch; beside the classical references (logistic regression on pixels,
   a small CNN trained for the same steps). `--full` adds Adam at 1e-4 and spectral clipping (`vision_plan`).

The table: authorized accuracy (base vs locked), then per held-back task the best attack from the locked weights
and from the base, the best reference attacker, and the uplifts over it. A lock protects something only where the
locked uplift is well below the base's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import models, tasks
from ..api import lock
from ..atomic import write_text
from ..io.artifacts import save
from ..locks import SpecDefConfig
from ..red_team import RedTeamConfig, RunnerConfig, redteam
from ..train import LoopConfig, evaluate, fit
from .demo_text import attack_summary

logger = logging.getLogger(__name__)

MODEL = "effnet-lite0"
AUTHORIZED = "cifar10-vehicles"  # airplane, automobile, ship, truck
UNAUTHORIZED = ("cifar10-animals", "animal-mnist")  # bird, cat, deer, dog, frog, horse; animal silhouettes


@dataclass
class VisionPlan:
    """Sizes of one EfficientNet demo run."""

    size: int  # input resolution (px): the trunk's cost grows with its square
    n_train: int  # authorized training images
    n_attack: int  # the attacker's training images per held-back task
    n_test: int  # test images per task
    batch_size: int
    train_steps: int
    lock_steps: int
    attack_steps: int  # per red-team run (the trained references get the same)
    lrs: tuple[float, ...]  # Adam rates of the red team (released weights and scratch)
    held_back: tuple[str, ...] = UNAUTHORIZED  # the attack tasks
    sv_clip: bool = False  # also spectral clipping before the two best Adam runs
    workers: int = 2  # red-team process pool on CPU (each run one thread)


def vision_plan(quick: bool, full: bool = False) -> VisionPlan:
    """The run's sizes. The default cuts the full plan's red team to the runs that decided its result (session 10,
    notes/uplift.md): Adam at 1e-4 never beat 1e-3 and spectral clipping sent every run on this BatchNorm network
    to chance, locked or not; `full` puts both back. `quick` also shrinks images, data and steps."""
    if quick:
        return VisionPlan(
            size=64,
            n_train=1000,
            n_attack=300,
            n_test=300,
            batch_size=32,
            train_steps=60,
            lock_steps=30,
            attack_steps=40,
            lrs=(1e-3,),
            held_back=UNAUTHORIZED[:1],
        )
    return VisionPlan(
        size=96,
        n_train=2000,
        n_attack=500,
        n_test=500,
        batch_size=32,
        train_steps=200,
        lock_steps=100,
        attack_steps=60,
        lrs=(1e-4, 1e-3) if full else (1e-3,),
        sv_clip=full,
    )


def _redteam_config(p: VisionPlan, device: str) -> RedTeamConfig:
    """Adam at each rate and the probe (with their twins from scratch), then (`sv_clip`) sv-clip before the two
    best."""
    n_plain = 2 * len(p.lrs) + 2  # coverage: each rate and its scratch twin, the probe and its twin
    return RedTeamConfig(
        loop=LoopConfig(device=device, max_steps=p.attack_steps, batch_size=p.batch_size, epochs=1000),
        budget=n_plain + (min(2, len(p.lrs)) if p.sv_clip else 0),
        runner=RunnerConfig(workers=p.workers if device == "cpu" else 0),
        optimizers=("adam",),
        lrs=p.lrs,
        transforms=("sv-clip",),
    )


def run(
    quick: bool = False, out: str | Path = "runs/demo", progress: bool = True, device: str = "cpu", full: bool = False
) -> dict:
    """Run the EfficientNet demo end to end (`vision_plan`'s sizes); returns the results dict also written to
    out/results.json."""
    t0 = time.perf_counter()
    p = vision_plan(quick, full)
    out = Path(out)
    say = logger.info if progress else logger.debug
    auth = tasks.get(AUTHORIZED).subset(p.n_train, p.n_test)
    loop = {"epochs": 1000, "batch_size": p.batch_size, "schedule": "linear", "device": device}

    say(f"[1/4] fine-tuning ImageNet-pretrained {MODEL} ({p.size} px) on {AUTHORIZED}: {p.train_steps} Adam steps")
    torch.manual_seed(0)
    base = models.build(MODEL, input_shape=auth.input_shape, num_classes=auth.num_classes, size=p.size)
    fit(base, auth, LoopConfig(optimizer="adam", lr=1e-3, max_steps=p.train_steps, **loop), progress=progress)
    base_acc = evaluate(base, auth)
    stages = {"train_s": time.perf_counter() - t0}
    say(f"      base accuracy on {AUTHORIZED}: {base_acc:.4f}")

    say(f"[2/4] locking with SpecDef (alpha 0.5, top-k 1, ce+kl, AdamW 1e-3, {p.lock_steps} steps)")
    lock_loop = LoopConfig(optimizer="adamw", lr=1e-3, max_steps=p.lock_steps, weight_decay=0.0, **loop)
    res = lock(base, SpecDefConfig(loop=lock_loop, alpha=0.5, top_k=1, retain="ce+kl"), retain=auth, progress=progress)
    locked, rep = res.model, res.report
    stages["lock_s"] = time.perf_counter() - t0 - stages["train_s"]
    say(
        f"      locked accuracy {rep.accuracy_after:.4f}; mean top-1 sigma {rep.sigma_before['mean_topk']:.4g} -> "
        f"{rep.sigma_after['mean_topk']:.4g}"
    )
    save(base, out / "base", {"task": AUTHORIZED, "metrics": {"accuracy": base_acc}})
    save(locked, out / "locked", {"task": AUTHORIZED, "metrics": {"accuracy": rep.accuracy_after}, **res.record})

    cfg = _redteam_config(p, device)
    held_back = []
    for i, name in enumerate(p.held_back):
        say(
            f"[3/4] red team on {name} ({p.n_attack} training images, {p.attack_steps} steps per run): Adam at "
            f"{', '.join(f'{x:g}' for x in p.lrs)}, the probe{', sv-clip' if p.sv_clip else ''}; each from "
            "scratch too; locked and base"
        )
        target, t1 = tasks.get(name).subset(p.n_attack, p.n_test, seed=i), time.perf_counter()
        rt = redteam(locked, target, cfg, out=out / "redteam" / name, base=base, retain=auth, progress=progress)
        summary = attack_summary(rt, name, target.chance)
        held_back.append({**summary, "report": str(out / "redteam" / name / "report.md")})
        stages[f"redteam_{name}_s"] = time.perf_counter() - t1

    say("[4/4] results")
    results = {
        "kind": "effnet",
        "quick": quick,
        "model": MODEL,
        "plan": asdict(p),
        "authorized": {"task": AUTHORIZED, "base": base_acc, "locked": rep.accuracy_after},
        "lock": rep.summary(),
        "held_back": held_back,
        "wall_s": time.perf_counter() - t0,
        "stages": stages,  # wall seconds of each step
    }
    write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True))
    results["written"] = {
        "results": str(out / "results.json"),
        "reports": [h["report"] for h in held_back],
        "models": [str(out / "base"), str(out / "locked")],
    }
    return results


def table(results: dict) -> str:
    a = results["authorized"]
    f = lambda r: "-" if r is None or r.get("accuracy") is None else f"{r['accuracy']:.4f}  ({r['attack']})"
    pts = lambda v: "-" if v is None else f"{100 * v:+.1f} points"
    lines = [f"{'authorized: ' + a['task']:<40} base {a['base']:.4f}   locked {a['locked']:.4f}"]
    for u in results["held_back"]:
        b = u["budget"]
        lines += [
            f"held back: {u['task']} (best of the red team; {b['n_train']} training images, {b['steps_per_run']} "
            f"steps per run; chance {u['chance']:.2f})",
            f"  {'from the locked weights':<38} {f(u['locked'])}",
            f"  {'from the unlocked base':<38} {f(u['base'])}",
            f"  {'best reference attacker':<38} {f(u['reference'])}",
            f"  {'uplift of the locked weights':<38} {pts(u['uplift'])}",
            f"  {'uplift without a lock (the base)':<38} {pts(u['base_uplift'])}",
            f"  {u['verdict']}",
        ]
    return "\n".join(lines)
