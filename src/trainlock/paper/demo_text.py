"""The demo: a pretrained transformer, where the released weights give an attacker a real head start.

1. fine-tune MiniLM-L6 (pretrained, offline) on rotten-tomatoes: the authorized task;
2. lock it with SpecDef (alpha 0.5, top-k 2, retain ce+kl, AdamW 5e-5): the MiniLM setting that moved the
   spectrum most within about a point of accuracy in notes/transformers.md (the paper's alpha 0.99 moves nothing
   in a CPU-sized run);
3. attack on bbc-news, a task the lock never saw, with the same small red team on the locked model and on
   the unlocked base: AdamW at three rates from the released weights and from scratch (the architecture
   re-initialized: the floor any attacker has), then spectral clipping and a logit-temperature reset.

The table: authorized accuracy (base vs locked), then on bbc-news the best a blind attacker reaches from the
locked weights, from the base's, from scratch, and the best reference attacker (scratch or the classical TF-IDF
model), with the uplifts over it. A lock protects something only if the locked uplift is well below the base's.
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
from ..tasks import for_model
from ..train import LoopConfig, evaluate, fit

logger = logging.getLogger(__name__)

AUTHORIZED, UNAUTHORIZED = "rotten-tomatoes", "bbc-news"


@dataclass
class TextPlan:
    """Sizes of one text demo run."""

    n_train: int
    n_test: int
    max_length: int
    batch_size: int
    train_steps: int
    lock_steps: int
    attack_steps: int  # per red-team run
    lrs: tuple[float, ...]  # AdamW rates of the red team (released weights and scratch)
    budget: int  # red-team runs per model
    workers: int = 2  # red-team process pool on CPU (each run one thread)


def text_plan(quick: bool) -> TextPlan:
    if quick:
        return TextPlan(
            n_train=600,
            n_test=300,
            max_length=48,
            batch_size=16,
            train_steps=30,
            lock_steps=15,
            attack_steps=30,
            lrs=(1e-4, 1e-3),
            budget=5,
        )
    return TextPlan(
        n_train=2000,
        n_test=1000,
        max_length=64,
        batch_size=16,
        train_steps=150,
        lock_steps=100,
        attack_steps=100,
        lrs=(5e-5, 1e-4, 1e-3),
        budget=8,
    )


def run(quick: bool = False, out: str | Path = "runs/demo", progress: bool = True, device: str = "cpu") -> dict:
    """Run the text demo end to end; returns the results dict also written to out/results.json."""
    t0 = time.perf_counter()
    p = text_plan(quick)
    out = Path(out)
    say = logger.info if progress else logger.debug
    auth = tasks.get(AUTHORIZED).subset(p.n_train, p.n_test)
    target = tasks.get(UNAUTHORIZED).subset(p.n_train, p.n_test)

    say(
        f"[1/4] fine-tuning pretrained MiniLM-L6 on {AUTHORIZED} ({p.train_steps} steps of AdamW 5e-5, batch "
        f"{p.batch_size}, {p.max_length} tokens)"
    )
    torch.manual_seed(0)
    base = models.build("minilm-l6", num_classes=auth.num_classes, max_length=p.max_length)
    loop = LoopConfig(
        optimizer="adamw",
        lr=5e-5,
        epochs=100,
        max_steps=p.train_steps,
        batch_size=p.batch_size,
        weight_decay=0.01,
        schedule="linear",
        device=device,
    )
    fit(base, for_model(auth, base), loop, progress=progress, desc=f"train on {AUTHORIZED}")
    base_acc = evaluate(base, for_model(auth, base))
    say(f"      base accuracy on {AUTHORIZED}: {base_acc:.4f}")

    say(f"[2/4] locking with SpecDef (alpha 0.5, top-k 2, ce+kl, AdamW 5e-5, {p.lock_steps} steps)")
    lock_loop = LoopConfig(
        optimizer="adamw",
        lr=5e-5,
        epochs=100,
        max_steps=p.lock_steps,
        batch_size=p.batch_size,
        weight_decay=0.0,
        schedule="linear",
        device=device,
    )
    res = lock(base, SpecDefConfig(loop=lock_loop, alpha=0.5, top_k=2, retain="ce+kl"), retain=auth, progress=progress)
    locked, rep = res.model, res.report
    say(
        f"      locked accuracy {rep.accuracy_after:.4f}; mean top-2 sigma {rep.sigma_before['mean_topk']:.4g} -> "
        f"{rep.sigma_after['mean_topk']:.4g}"
    )

    say(
        f"[3/4] red team on {UNAUTHORIZED}: {p.budget} runs of {p.attack_steps} steps on the locked model and the "
        f"same on the base (AdamW at {', '.join(f'{x:g}' for x in p.lrs)}, released and from scratch; sv-clip; "
        "temperature reset)"
    )
    out.mkdir(parents=True, exist_ok=True)
    cfg = RedTeamConfig(
        loop=LoopConfig(
            device=device, max_steps=p.attack_steps, batch_size=p.batch_size, epochs=100, schedule="linear"
        ),
        budget=p.budget,
        runner=RunnerConfig(workers=p.workers if device == "cpu" else 0),
        optimizers=("adamw",),
        lrs=p.lrs,
        transforms=("sv-clip", "temperature-reset"),
    )
    rt = redteam(locked, target, cfg, out=out / "redteam", base=base, progress=progress)

    say("[4/4] results")
    save(base, out / "base", {"task": AUTHORIZED, "metrics": {"accuracy": base_acc}})
    save(locked, out / "locked", {"task": AUTHORIZED, "metrics": {"accuracy": rep.accuracy_after}, **res.record})
    results = {
        "kind": "text",
        "quick": quick,
        "plan": asdict(p),
        "authorized": {"task": AUTHORIZED, "base": base_acc, "locked": rep.accuracy_after},
        "lock": rep.summary(),
        "unauthorized": attack_summary(rt, UNAUTHORIZED, target.chance),
        "wall_s": time.perf_counter() - t0,
    }
    write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True))
    results["written"] = {
        "results": str(out / "results.json"),
        "report": str(out / "redteam" / "report.md"),
        "models": [str(out / "base"), str(out / "locked")],
    }
    return results


def attack_summary(rt: dict, task: str, chance: float) -> dict:
    """What a demo keeps of a red team's result on one held-back task: the best attack from the locked weights,
    the base and scratch, the best reference attacker, the uplifts, the budget and the verdict."""
    pick = lambda r: None if r is None else {"attack": r["attack"], "accuracy": r["accuracy"]}
    return {
        "task": task,
        "chance": chance,
        "locked": pick(rt["locked"]),
        "base": pick(rt["base"]),
        "scratch": pick(rt["scratch"]),
        "reference": {"accuracy": rt["reference"]["accuracy"], "attack": rt["reference"]["attacker"]},
        "uplift": rt["uplift"],
        "base_uplift": rt["base_uplift"],
        "budget": rt["budget"],
        "verdict": rt["verdict"],
    }


def table(results: dict) -> str:
    a, u = results["authorized"], results["unauthorized"]
    f = lambda r: "-" if r is None or r.get("accuracy") is None else f"{r['accuracy']:.4f}  ({r['attack']})"
    adv = lambda v: "-" if v is None else f"{100 * v:+.1f} points"
    if "uplift" not in u:  # results written before references existed
        u = {**u, "reference": u["scratch"], "uplift": u.get("advantage"), "base_uplift": u.get("base_advantage")}
    lines = [
        f"{'authorized: ' + a['task']:<40} base {a['base']:.4f}   locked {a['locked']:.4f}",
        f"unauthorized: {u['task']} (best of the red team, chance {u['chance']:.2f})",
        f"  {'from the locked weights':<38} {f(u['locked'])}",
        f"  {'from the unlocked base':<38} {f(u['base'])}",
        f"  {'from scratch (re-initialized)':<38} {f(u['scratch'])}",
        f"  {'best reference attacker':<38} {f(u['reference'])}",
        f"  {'uplift of the locked weights':<38} {adv(u['uplift'])}",
        f"  {'uplift without a lock (the base)':<38} {adv(u['base_uplift'])}",
    ]
    if u.get("verdict"):
        lines.append(f"  {u['verdict']}")
    return "\n".join(lines)
