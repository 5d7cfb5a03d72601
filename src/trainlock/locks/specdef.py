"""SpecDef (Rosati et al., Algorithm 1): inflate the top-k singular values of every weight while a
retain loss keeps the authorized task.

    loss = alpha * retain_loss - (1 - alpha) * mean(top-k singular values of every lockable W)

The mean runs over the union of all layers' top-k values (the paper's (1/n) sum_i sigma_m[i]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import to_dict
from ..tasks import Task
from ..training import LoopConfig, LoopResult, clone_model, evaluate, fit, resolve_device
from .lockable import Lockable, find_lockable, sigma_report

RETAIN_LOSSES = ("ce", "kl", "ce+kl")


@dataclass
class SpecDefConfig:
    """SpecDef hyper-parameters. Defaults follow the paper's image setting (Appendix B.2)."""

    alpha: float = 0.5  # weight of the retain loss; 1 - alpha weighs the spectral term
    top_k: int = 1  # singular values per weight (Remark A.3: k > 1 keeps the bound non-vacuous)
    lr: float = 1.0  # the paper locks with Adadelta at lr 1
    optimizer: str = "adadelta"
    epochs: int = 1
    batch_size: int = 64
    lr_gamma: float | None = 0.7  # step-LR decay per epoch, as in the paper
    max_steps: int | None = None  # cap on steps in all (None: every epoch)
    retain: str = "ce"  # "ce": task cross-entropy; "kl": KL to the original model; "ce+kl": both
    include: str | None = None  # regex on parameter names to lock (default: Linear and Conv weights)
    exclude: str | None = None  # regex on parameter names to leave alone
    conv_mode: str = "reshape"  # "reshape": (out, in*kh*kw) kernel; "operator": true conv norm
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.retain not in RETAIN_LOSSES:
            raise ValueError(f"retain must be one of {RETAIN_LOSSES}, got {self.retain!r}")

    def to_dict(self) -> dict:
        return to_dict(self)

    def loop(self) -> LoopConfig:
        return LoopConfig(
            optimizer=self.optimizer, lr=self.lr, epochs=self.epochs, batch_size=self.batch_size,
            seed=self.seed, max_steps=self.max_steps, lr_gamma=self.lr_gamma, device=self.device,
        )


@dataclass
class LockReport:
    """What a lock run did: the locked model, per-epoch log, sigma before and after."""

    model: nn.Module
    config: dict
    history: list[dict] = field(default_factory=list)
    sigma_before: dict = field(default_factory=dict)
    sigma_after: dict = field(default_factory=dict)
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    stopped: str | None = None  # set when the run stopped early (e.g. non-finite loss)

    def summary(self) -> dict:
        """JSON-ready metrics (no tensors, no model)."""
        return {
            "config": self.config,
            "history": self.history,
            "sigma_before": self.sigma_before,
            "sigma_after": self.sigma_after,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "stopped": self.stopped,
        }


def spectral_term(lockables: list[Lockable], k: int) -> torch.Tensor:
    """Mean of the union of every lockable weight's top-k singular values (scalar, differentiable)."""
    return torch.cat([l.sigma(k) for l in lockables]).mean()


def _retain_loss(kind: str, original: nn.Module | None):
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        out = logits.new_zeros(())
        if "ce" in kind.split("+"):
            out = out + F.cross_entropy(logits, y)
        if "kl" in kind.split("+"):
            with torch.no_grad():
                ref = F.log_softmax(original(x), dim=1)
            out = out + F.kl_div(F.log_softmax(logits, dim=1), ref, log_target=True, reduction="batchmean")
        return out

    return loss


def specdef(model: nn.Module, cfg: SpecDefConfig, retain: Task, progress: bool = True) -> LockReport:
    """Lock a copy of `model` with SpecDef on the retain task. The input model is not modified."""
    torch.manual_seed(cfg.seed)
    shape = getattr(model, "input_shape", None)
    retain = retain.adapt(shape) if shape is not None else retain
    locked = clone_model(model)
    lockables = find_lockable(locked, cfg.include, cfg.exclude, cfg.conv_mode, sample=retain.x_train[:1])
    original = None
    if "kl" in cfg.retain:
        original = clone_model(model).eval()
        for p in original.parameters():
            p.requires_grad_(False)
    retain_loss = _retain_loss(cfg.retain, original)
    report = LockReport(locked, cfg.to_dict())
    report.sigma_before = sigma_report(lockables, cfg.top_k)
    report.accuracy_before = evaluate(model, retain)
    sums: dict[str, float] = {"retain": 0.0, "sigma": 0.0, "n": 0}

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
        r = retain_loss(m, x, y)
        s = spectral_term(lockables, cfg.top_k)
        sums["retain"] += float(r.detach())
        sums["sigma"] += float(s.detach())
        sums["n"] += 1
        return cfg.alpha * r - (1.0 - cfg.alpha) * s, {}

    def on_epoch(epoch: int) -> dict:
        n = max(1, sums["n"])
        log = {"retain_loss": sums["retain"] / n, "mean_topk_sigma": sums["sigma"] / n,
               "retain_accuracy": evaluate(locked, retain)}
        sums.update(retain=0.0, sigma=0.0, n=0)
        if progress:
            print(f"  lock epoch {epoch}: retain loss {log['retain_loss']:.4f}  "
                  f"retain acc {log['retain_accuracy']:.4f}  mean top-{cfg.top_k} sigma {log['mean_topk_sigma']:.4g}")
        return log

    device = resolve_device(cfg.device)
    locked.to(device)
    if original is not None:
        original.to(device)
    result: LoopResult = fit(locked, retain, cfg.loop(), loss_fn, on_epoch=on_epoch, desc="lock", progress=progress)
    report.history = result.epochs
    report.stopped = result.stopped
    report.sigma_after = sigma_report(lockables, cfg.top_k)
    report.accuracy_after = evaluate(locked, retain)
    if result.stopped:
        print(f"  lock stopped early: {result.stopped}")
    return report
