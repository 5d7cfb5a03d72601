"""`probe-adversary`: our lock aimed at the probe attack (logistic regression on the frozen features of the head's
input and up to 8 trunk blocks, `trainlock.attacks.stages.probe`), the attack that takes no optimizer step and
so walks past every fine-tuning lock.

Each step reads, on a batch of a PROXY restricted task (`restricted`, then `proxies` in turn; never a held-back
task the red team scores), the very feature sets the probe attack reads (`trainlock.models.blocks`: the same
block selection, pooling and eval mode), fits a closed-form ridge probe on each, W = (F^T F + lam n I)^-1 F^T Y
on standardized features of one half of the batch, scores it on the other half (and the other way round), and
pushes the positive part of its held-out R^2 towards zero through the closed-form solution, while the
authorized task is kept by its cross-entropy and a KL to the base's predictions:

    loss = alpha * reduce_sets R2+(ridge probe; proxy) + (1 - alpha) * [CE(retain) + kl_weight * KL(base || theta)]

Why it could work: a linear probe succeeds exactly when class information is linearly decodable from a feature
set; the closed-form probe is the best such decoder for the batch (in the least-squares sense), so its held-out
score is a differentiable measure of that decodability, and lowering it on every set the attacker reads
removes (or entangles non-linearly) what the attacker's probe would find, for the proxy domain, while the
retain terms keep the authorized task's features. Standardizing per feature makes it scale-free, as the
attacker's standardized logistic regression is, so the lock cannot win by shrinking features; scoring held-out
examples asks for features that do not generalize linearly, not for features that merely fail on one batch.

What it cannot claim: a ridge probe on a batch of `probe_batch` examples is not the attacker's cross-validated
logistic regression on the full training split (more data, a tuned penalty, a different loss); it is fitted
on proxy tasks, and whether the effect carries over to the held-back tasks is exactly what it cannot know (on
digits, a lock trained against one pixel permutation cut the real probe's accuracy on it from 0.93 to about 0.5
and left another permutation's at 0.93); it does nothing against fine-tuning, against other layers or poolings, or against non-linear probes; and the
information may still be there for a richer decoder. The red team measures the real probe; the certificate
re-fits one fixed ridge probe on the proxy task (`trainlock.locks.probing`) and claims only that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import option
from ..models.blocks import MAX_BLOCKS
from ..train import LoopConfig
from .base import register_lock
from .probing import REDUCTIONS, FeatureTap, ProbeCheck, ProbeTargetLock, check_probe_settings, on_device, retain_loss
from .restricted import endless


@dataclass
class ProbeAdversaryConfig:
    restricted: str | None = option(
        None,
        "the proxy restricted task (a task name) trained against and certified on; never a held-back task "
        "the red team scores",
    )
    proxies: tuple[str, ...] = option(
        (), "more proxy tasks trained against, one per step in turn after `restricted` (not certified)"
    )
    loop: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="adam", lr=1e-4, epochs=1),
        help="the loop, over the authorized task's training split",
    )
    alpha: float = option(0.5, "weight of the probe term in [0, 1]; 1 - alpha weighs the retain loss")
    layers: str = option(
        "all",
        "the feature sets: all, the head's input and the trunk blocks the probe attack reads; head, the head's "
        "input only",
        choices=lambda: ("all", "head"),
    )
    max_blocks: int = option(MAX_BLOCKS, "at most this many trunk blocks, evenly spaced, the deepest always")
    lam: tuple[float, ...] = option(
        (0.01, 0.1, 1.0),
        "the batch ridge probe's penalties per example, on standardized features; the best held-out fit over "
        "them counts, as the attacker's cross-validation picks its C",
    )
    probe_batch: int = option(
        256, "proxy examples per step (halved: the probe is fitted on one half, scored on the other)"
    )
    reduce: str = option(
        "max",
        "how the feature sets' terms combine: max (the most informative set, the one the attacker's probe "
        "picks), or mean",
        choices=lambda: REDUCTIONS,
    )
    kl_weight: float = option(1.0, "weight of KL(base || locked) on the retain batch, beside its cross-entropy")
    probe: ProbeCheck = option(factory=ProbeCheck, help="the certificate's probe")

    def __post_init__(self):
        check_probe_settings("probe-adversary", self)


@register_lock(
    "probe-adversary",
    ProbeAdversaryConfig,
    example={
        "restricted": "digits-permuted-1",
        "probe_batch": 64,
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
        "probe": {"samples": 500, "test_samples": 200},
    },
)
class ProbeAdversaryLock(ProbeTargetLock):
    """Closed-form ridge probes on the probe attack's feature sets, trained against on proxy tasks; certifies
    one ridge probe's end accuracy."""

    mechanism = "probe adversary: the proxy domain's features were trained to defeat closed-form ridge probes"

    def objective(self, locked, restricted, stream):
        cfg = self.cfg
        tasks = self.proxy_tasks(locked, restricted)
        streams = [endless(t, cfg.probe_batch, cfg.loop.seed + 1001 + i) for i, t in enumerate(tasks)]
        tap = FeatureTap(locked, cfg.layers, cfg.max_blocks)
        base = self.base_copy(locked) if cfg.kl_weight > 0 else None
        sums = {"probe_r2": 0.0, "probe_accuracy": 0.0, "retain_loss": 0.0, "n": 0}
        turn = [0]

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            i = turn[0] % len(tasks)
            turn[0] += 1
            term, stats = self.probe_loss(m, tap, next(on_device(streams[i], x.device)), tasks[i])
            if base is not None:
                base.to(x.device)
            keep, ce = retain_loss(m, base, x, y, cfg.kl_weight)
            sums["probe_r2"] += stats["probe_r2"]
            sums["probe_accuracy"] += stats["probe_accuracy"]
            sums["retain_loss"] += float(ce.detach())
            sums["n"] += 1
            return cfg.alpha * term + (1.0 - cfg.alpha) * keep, {}

        return loss_fn, sums, tap.close

    def details(self, model, record) -> dict:
        cfg = self.cfg
        return {
            "alpha": cfg.alpha,
            "lam": list(cfg.lam),
            "probe_batch": cfg.probe_batch,
            "reduce": cfg.reduce,
            "kl_weight": cfg.kl_weight,
            "proxies": list(cfg.proxies),
        }
