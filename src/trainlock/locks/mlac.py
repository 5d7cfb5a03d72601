"""`mlac`: meta-learned adversarial censoring in the style of "Self-destructing models" (Henderson, Mitchell,
Manning, Jurafsky, Finn; arXiv 2211.14946), written from the paper's description.

MLAC trains the released weights adversarially against simulated adversaries on a PROXY harmful task: each
outer step lets adversaries adapt the current weights to the proxy task, and moves the weights so that the
adapted adversaries' loss on it is high, while the desired (authorized) task keeps its loss low. Here two
adversaries take turns in one adversarial term, on the config's proxy tasks only (`restricted`, then
`proxies` round robin, one per step; the held-back tasks the red team scores are never read):

    adv  = (1 - probe_weight) * mean_k suppression(theta_k; proxy)   (simulated fine-tuning, first order)
         + probe_weight * R2+(ridge probe on frozen features; proxy)  (a linear head fitted in closed form)
    loss = alpha * adv + (1 - alpha) * [CE(theta; retain) + kl_weight * KL(base || theta; retain)]

The fine-tuning adversary is sophon's inner loop (`trainlock.locks.sophon.suppression_gradients`):
`inner_steps` steps of SGD (or Adam) on proxy batches, each simulated point scored by the bounded inverse
cross-entropy -log(1 - p_y) (or KL to uniform), its gradient applied to the released weights first order. The
probe adversary is the head an attacker fits on the frozen features: a ridge probe solved in closed form on a
proxy batch (`trainlock.locks.probing`: standardized features, fitted on one half, scored on the other), whose
held-out R^2 the lock drives to zero; its gradient flows through the closed-form solution into the trunk.

Differences from the paper: the inner loop is first order (no second derivatives through it) with one fixed
optimizer and rate rather than sampled adversary configurations (the fine-tuning adversary puts a freshly
initialized linear head of the proxy task's classes on the head's input features at every outer step, as the
paper's adversaries do, so proxy tasks need not share the authorized task's classes); the adversary's loss is the bounded inverse
cross-entropy rather than the negated cross-entropy; the probe adversary (a closed-form head on frozen
features, the attack that needs no optimizer step) is our addition to the paper's fine-tuning adversary; and
the authorized task is kept with cross-entropy plus KL to the base rather than cross-entropy alone.

Certificates: the simulated fine-tuning attack of `trainlock.locks.restricted` and the probe certificate of
`trainlock.locks.probing`, both on the `restricted` proxy task; neither says anything about the held-back
tasks, other attacks, optimizers, budgets or probes (the red team measures those).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import check_float, check_int, option
from .base import register_lock
from .probe_adversary import ProbeAdversaryConfig
from .probing import FeatureTap, ProbeTargetLock, check_probe_settings, on_device, retain_loss
from .restricted import SimulatedAttack, endless
from .sophon import INNER_OPTIMIZERS, SUPPRESSIONS, SophonConfig, suppression_gradients


@dataclass
class MLACConfig(ProbeAdversaryConfig):
    """probe-adversary's settings (the proxy tasks, the loop, the probe adversary's features and ridge fit, the
    retain loss, the certificate's probe: `alpha` weighs the whole adversarial term) and the simulated fine-tuning's."""

    probe_weight: float = option(
        0.5, "share of the adversarial term given to the probe adversary; the rest goes to simulated fine-tuning"
    )
    inner_steps: int = option(3, "simulated fine-tuning steps per outer step (first order)")
    inner_lr: float = option(1e-2, "learning rate of the simulated fine-tuning")
    inner_optimizer: str = option(
        "sgd", "the simulated fine-tuning's optimizer: sgd or adam", choices=lambda: INNER_OPTIMIZERS
    )
    suppression: str = option(
        "ice",
        "the fine-tuning adversary's score: ice, inverse cross-entropy -log(1 - p_y); klu, KL to uniform",
        choices=lambda: SUPPRESSIONS,
    )
    attack: SimulatedAttack = option(
        factory=lambda: SimulatedAttack(head="fresh"),
        help="the certificate's simulated fine-tuning attack (a fresh head, as the lock's adversary uses)",
    )

    def __post_init__(self):
        check_probe_settings("mlac", self)
        check_float("mlac", "probe_weight", self.probe_weight, 0.0, 1.0)
        check_int("mlac", "inner_steps", self.inner_steps, 0)
        check_float("mlac", "inner_lr", self.inner_lr, 0.0, open_low=True)
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"mlac: inner_optimizer must be one of {INNER_OPTIMIZERS}, got {self.inner_optimizer!r}")
        if self.suppression not in SUPPRESSIONS:
            raise ValueError(f"mlac: suppression must be one of {SUPPRESSIONS}, got {self.suppression!r}")


@register_lock(
    "mlac",
    MLACConfig,
    example={
        "restricted": "digits-permuted-1",
        "inner_steps": 1,
        "probe_batch": 64,
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
        "attack": {"steps": 5, "max_accuracy": 1.0},
        "probe": {"samples": 500, "test_samples": 200},
    },
)
class MLACLock(ProbeTargetLock):
    """MLAC-style adversarial meta-learning against simulated fine-tuning and a probe on proxy tasks;
    certifies one simulated attack's and one ridge probe's end accuracy."""

    mechanism = (
        "adversarial meta-learning: the weights were trained so that simulated fine-tuning and a linear probe "
        "on the proxy restricted domain keep predicting it badly"
    )

    def objective(self, locked, restricted, stream):
        cfg = self.cfg
        tasks = self.proxy_tasks(locked, restricted)
        ft_streams = [stream] + [
            endless(t, cfg.loop.batch_size, cfg.loop.seed + 1 + i) for i, t in enumerate(tasks[1:], 1)
        ]
        probe_streams = [endless(t, cfg.probe_batch, cfg.loop.seed + 1001 + i) for i, t in enumerate(tasks)]
        inner = SophonConfig(
            restricted=cfg.restricted,
            inner_steps=cfg.inner_steps,
            inner_lr=cfg.inner_lr,
            inner_optimizer=cfg.inner_optimizer,
            suppression=cfg.suppression,
        )
        tap = FeatureTap(locked, cfg.layers, cfg.max_blocks) if cfg.probe_weight > 0 else None
        head_tap = FeatureTap(locked, "head") if cfg.probe_weight < 1 else None  # the fine-tuner's fresh head
        base = self.base_copy(locked) if cfg.kl_weight > 0 else None
        sums = {"suppression": 0.0, "probe_r2": 0.0, "probe_accuracy": 0.0, "retain_loss": 0.0, "n": 0}
        turn = [0]

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            i = turn[0] % len(tasks)
            turn[0] += 1
            task, dev = tasks[i], x.device
            adv = torch.zeros((), device=dev)
            if cfg.probe_weight < 1:
                grads, sup = suppression_gradients(m, on_device(ft_streams[i], dev), inner, task, head_tap)
                params = [p for p in m.parameters() if p.requires_grad]
                surrogate = sum((p * g.to(p.dtype)).sum() for p, g in zip(params, grads, strict=False))
                adv = adv + (1 - cfg.probe_weight) * surrogate
                sums["suppression"] += sup
            if tap is not None:
                term, stats = self.probe_loss(m, tap, next(on_device(probe_streams[i], dev)), task)
                adv = adv + cfg.probe_weight * term
                sums["probe_r2"] += stats["probe_r2"]
                sums["probe_accuracy"] += stats["probe_accuracy"]
            if base is not None:
                base.to(dev)
            keep, ce = retain_loss(m, base, x, y, cfg.kl_weight)
            sums["retain_loss"] += float(ce.detach())
            sums["n"] += 1
            return cfg.alpha * adv + (1.0 - cfg.alpha) * keep, {}

        def cleanup():
            for t in (tap, head_tap):
                if t is not None:
                    t.close()

        return loss_fn, sums, cleanup

    def details(self, model, record) -> dict:
        cfg = self.cfg
        return {
            "alpha": cfg.alpha,
            "probe_weight": cfg.probe_weight,
            "inner_steps": cfg.inner_steps,
            "inner_lr": cfg.inner_lr,
            "inner_optimizer": cfg.inner_optimizer,
            "proxies": list(cfg.proxies),
        }
