"""`immunize`: model immunization by condition number in the style of Zheng, Bai, Bullins and Yeh (ICML
2025), written from the paper's description.

For linear probing with gradient descent, the Hessian of the probe's loss is governed by the feature
covariance S = F^T F / n of the features F that reach the head; its condition number kappa(S) sets how
slowly the probe converges. The lock trains the feature extractor so the restricted domain's features are
ill-conditioned while the authorized domain's stay well-conditioned, and keeps the authorized task:

    loss = CE(retain) + lam_well * log kappa(F_retain) - lam_ill * log kappa(F_restricted)

kappa(F) = sigma_max(F) / sigma_min(F) over the batch's feature matrix (B x D, centred), so log kappa(S) =
2 log kappa(F); sigma_min is the smallest of the min(B - 1, D) singular values, smoothed by `eps` (see
`log_kappa`).
The paper's regularizers are differentiable bounds on the same two condition numbers; this uses the singular
values directly (torch.linalg.svdvals). Its guarantee is for linear probing; full fine-tuning can change the
features themselves, which is what the red team does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, option
from ..models.base import find_head
from ..tasks import Task, for_model
from ..train import LoopConfig, predict
from .base import register_lock
from .restricted import RestrictedLock, RestrictedRecord, SimulatedAttack


@dataclass
class ImmunizeConfig:
    restricted: str | None = option(None, "the restricted task (a task name) whose features are ill-conditioned")
    loop: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="adam", lr=1e-4, epochs=1),
        help="the loop, over the authorized task's training split",
    )
    lam_ill: float = option(0.1, "weight of -log kappa of the restricted features")
    lam_well: float = option(0.1, "weight of +log kappa of the authorized features")
    eps: float = option(1e-3, "smoothing: sigma_min is read as sigma_min + eps * sigma_max (kappa <= 1 / eps)")
    attack: SimulatedAttack = option(factory=SimulatedAttack, help="the certificate's simulated attack")

    def __post_init__(self):
        check_float("immunize", "lam_ill", self.lam_ill, 0.0)
        check_float("immunize", "lam_well", self.lam_well, 0.0)
        check_float("immunize", "eps", self.eps, 0.0, open_low=True)


def log_kappa(features: torch.Tensor, eps: float) -> torch.Tensor:
    """log of the condition number of the centred feature matrix (B, D) (half of log kappa(F^T F)), over its
    min(B - 1, D) singular values (centring B rows leaves rank at most B - 1), smoothed as
    log sigma_max - log(sigma_min + eps * sigma_max) so that the gradient never vanishes at a zero sigma_min."""
    f = features.float()  # fp32 also under bf16 autocast (--precision bf16)
    with torch.autocast(device_type=f.device.type, enabled=False):
        s = torch.linalg.svdvals(f - f.mean(0, keepdim=True))
    r = max(1, min(f.shape[0] - 1, f.shape[1]))
    return torch.log(s[0]) - torch.log(s[r - 1] + eps * s[0])


class _Features:
    """The head's input, captured by a forward pre-hook."""

    def __init__(self, model: nn.Module, collect: bool = False):
        _, head = find_head(model)
        self.last: torch.Tensor | None = None
        self.all: list[torch.Tensor] | None = [] if collect else None
        self.handle = head.register_forward_pre_hook(self._grab)

    def _grab(self, module, args):
        self.last = args[0].flatten(1)
        if self.all is not None:
            self.all.append(self.last.detach())

    def remove(self):
        self.handle.remove()


@torch.no_grad()
def feature_log10_kappa(model: nn.Module, task: Task, n: int = 512) -> float:
    """log10 of kappa(S) = kappa(F)^2 for the first n test examples' features."""
    grab = _Features(model, collect=True)
    try:
        t = for_model(task, model)
        predict(model, t.x_test[:n])
        return float(2 * log_kappa(torch.cat(grab.all), 1e-12) / math.log(10.0))
    finally:
        grab.remove()


@dataclass
class ImmunizeRecord(RestrictedRecord):
    kappa_at_lock: float | None = option(None, "log10 kappa of the restricted feature covariance at lock time")


@register_lock(
    "immunize",
    ImmunizeConfig,
    example={
        "restricted": "digits-permuted-1",
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
        "attack": {"steps": 5, "max_accuracy": 1.0},
    },
)
class ImmunizeLock(RestrictedLock):
    """Condition-number immunization of the features; certifies one simulated attack's end accuracy."""

    record_cls = ImmunizeRecord
    mechanism = (
        "condition-number immunization: the restricted domain's feature covariance was made ill-conditioned, "
        "which slows gradient descent on a linear probe over those features"
    )

    def objective(self, locked, restricted, stream):
        grab = _Features(locked)
        sums = {"log_kappa_restricted": 0.0, "log_kappa_retain": 0.0, "retain_loss": 0.0, "n": 0}

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            xr, _ = next(stream)
            m(xr)
            k_ill = log_kappa(grab.last, self.cfg.eps)
            ce = F.cross_entropy(m(x), y)
            k_well = log_kappa(grab.last, self.cfg.eps)
            sums["log_kappa_restricted"] += float(k_ill.detach())
            sums["log_kappa_retain"] += float(k_well.detach())
            sums["retain_loss"] += float(ce.detach())
            sums["n"] += 1
            return ce + self.cfg.lam_well * k_well - self.cfg.lam_ill * k_ill, {}

        return loss_fn, sums, grab.remove

    def after_apply(self, locked, restricted) -> dict:
        return {"kappa_at_lock": feature_log10_kappa(locked, restricted)}

    def details(self, model, record: ImmunizeRecord) -> dict:
        task = self._tasks.get(self.cfg.restricted)
        now = None if task is None else feature_log10_kappa(model, task)
        return {"log10_kappa_restricted_at_lock": record.kappa_at_lock, "log10_kappa_restricted_now": now}
