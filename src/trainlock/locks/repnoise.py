"""`repnoise`: representation noising in the style of RepNoise (Rosati et al., NeurIPS 2024), written from
the paper's description.

The restricted domain's hidden representations are pushed towards Gaussian noise, so the information a
fine-tuning run would need is no longer in the features, while the authorized task keeps its own:

    loss = CE(retain) + beta * mean_layers MMD(h_l(x_restricted), N(0, I)) - alpha * ICE-ascent(restricted)

h_l are the outputs of every Linear / Conv layer except the classification head (flattened per example);
MMD is the Gaussian-kernel maximum mean discrepancy with bandwidth sqrt(dimension). The ascent term is
written as the bounded inverse cross-entropy -log(1 - p_y) (RepNoise ascends the harmful loss with a small
weight; the bounded form keeps it from diverging). The restricted task's classes are read from the model's
first outputs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, from_dict, option, to_dict
from ..models.base import find_head
from ..tasks import Task, for_model
from ..train import LoopConfig, LoopHooks, clone_model, evaluate, fit
from .base import Certificate, LockDefaults, LockReport, register_lock
from .restricted import SimulatedAttack, attack_certificate, endless, fit_logits, inverse_ce, restricted_task


@dataclass
class RepNoiseConfig:
    restricted: str | None = option(None, "the restricted task (a task name) whose representations are noised")
    loop: LoopConfig = option(factory=lambda: LoopConfig(optimizer="adam", lr=1e-4, epochs=1),
                              help="the loop, over the authorized task's training split")
    alpha: float = option(1.0, "weight of the (bounded) ascent on the restricted task's loss")
    beta: float = option(1.0, "weight of the noise term: MMD between restricted representations and N(0, I)")
    attack: SimulatedAttack = option(factory=SimulatedAttack, help="the certificate's simulated attack")
    retain_task: str | None = option(None, "recorded by apply: the authorized task")

    def __post_init__(self):
        check_float("repnoise", "alpha", self.alpha, 0.0)
        check_float("repnoise", "beta", self.beta, 0.0)


def gaussian_mmd(h: torch.Tensor, seed_gen: torch.Generator | None = None) -> torch.Tensor:
    """Squared MMD between the rows of `h` (B, D) and as many N(0, I) samples, Gaussian kernel with
    bandwidth sqrt(D) (the biased estimator: always >= 0)."""
    h = h.float()
    z = torch.randn(h.shape, generator=seed_gen).to(h.device)
    scale = 2.0 * h.shape[1]

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / scale)

    return k(h, h).mean() + k(z, z).mean() - 2 * k(h, z).mean()


def hidden_layers(model: nn.Module) -> list[nn.Module]:
    """Every Linear / Conv2d module except the classification head."""
    try:
        _, head = find_head(model)
    except ValueError:
        head = None
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head]


@register_lock
class RepNoiseLock(LockDefaults):
    """RepNoise-style representation noising; certifies one simulated fine-tuning attack's end accuracy."""

    name = "repnoise"

    def __init__(self, config: RepNoiseConfig, tasks: dict[str, Task] | None = None):
        self.cfg = dataclasses.replace(config)
        self._tasks: dict[str, Task] = dict(tasks or {})
        self._report: LockReport | None = None

    @classmethod
    def from_config(cls, data: dict) -> "RepNoiseLock":
        return cls(from_dict(RepNoiseConfig, dict(data)))

    def config(self) -> dict:
        return to_dict(self.cfg)

    def report(self) -> LockReport | None:
        return self._report

    def use_tasks(self, *tasks: Task) -> "RepNoiseLock":
        for t in tasks:
            self._tasks[t.name] = t
        return self

    def apply(self, model: nn.Module, retain: Task | None = None) -> nn.Module:
        if retain is None:
            raise ValueError("repnoise: apply needs the retain (authorized) task")
        restricted = for_model(restricted_task(self.cfg.restricted, self._tasks, "repnoise"), model)
        if restricted.name == retain.name:
            raise ValueError(f"repnoise: the restricted and the retain task are both {retain.name!r}")
        retain = for_model(retain, model)
        torch.manual_seed(self.cfg.loop.seed)
        locked = clone_model(model)
        layers = hidden_layers(locked)
        if not layers:
            raise ValueError("repnoise: the model has no hidden Linear / Conv2d layer to noise")
        captured: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda mod, inp, out: captured.append(out.flatten(1))) for m in layers]
        stream = endless(restricted, self.cfg.loop.batch_size, self.cfg.loop.seed + 1)
        gen = torch.Generator().manual_seed(self.cfg.loop.seed)
        report = LockReport(locked, to_dict(self.cfg))
        report.accuracy_before = evaluate(model, retain)
        logs = {"mmd": 0.0, "retain": 0.0, "n": 0}

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            captured.clear()
            xr, yr = next(stream)
            logits_r = fit_logits(m(xr), restricted, "repnoise")
            mmd = torch.stack([gaussian_mmd(h, gen) for h in captured]).mean()
            captured.clear()
            ce = F.cross_entropy(m(x), y)
            captured.clear()
            logs["mmd"] += float(mmd.detach())
            logs["retain"] += float(ce.detach())
            logs["n"] += 1
            return ce + self.cfg.beta * mmd + self.cfg.alpha * inverse_ce(logits_r, yr), {}

        def on_epoch(epoch: int) -> dict:
            n = max(1, logs["n"])
            out = {"mmd": logs["mmd"] / n, "retain_loss": logs["retain"] / n, "retain_accuracy": evaluate(locked, retain)}
            logs.update(mmd=0.0, retain=0.0, n=0)
            return out

        t0 = time.perf_counter()
        try:
            res = fit(locked, retain, self.cfg.loop, loss_fn, LoopHooks(on_epoch=on_epoch, checkpoint=self.checkpoint),
                      desc="repnoise", progress=self.progress)
        finally:
            for h in handles:
                h.remove()
        report.steps, report.loop_s, report.history, report.stopped = (res.steps, time.perf_counter() - t0,
                                                                       res.epochs, res.stopped)
        report.accuracy_after = evaluate(locked, retain)
        self._report = report
        self.cfg.retain_task = retain.name
        if self.cfg.attack.max_accuracy is None:
            self.cfg.attack = dataclasses.replace(self.cfg.attack, max_accuracy=min(1.0, restricted.chance + 0.10))
        return locked

    def certify(self, model: nn.Module) -> list[Certificate]:
        if self.cfg.attack.max_accuracy is None:
            raise ValueError("repnoise: no claim recorded; apply the lock first")
        task = restricted_task(self.cfg.restricted, self._tasks, "repnoise")
        return [attack_certificate(
            self.name, model, task, self.cfg.attack,
            "representation noising: the restricted domain's hidden representations were pushed towards "
            "Gaussian noise, so fine-tuning must rebuild them",
            {"restricted": self.cfg.restricted, "retain_task": self.cfg.retain_task, "alpha": self.cfg.alpha,
             "beta": self.cfg.beta})]
