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
from ..train.loop import LoopConfig, LoopResult, clone_model, evaluate, fit, resolve_device
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


# ---------------------------------------------------------------- the registered lock


from ..config import from_dict  # noqa: E402  (appended: the Lock interface over specdef())
from .base import LOCKS, Certificate  # noqa: E402


@dataclass
class SpecDefLockConfig(SpecDefConfig):
    """SpecDefConfig plus what the certificate needs: the per-layer sigma_max recorded at lock time."""

    recorded_sigma_max: dict | None = None  # by apply: {parameter name: sigma_max of the (out, -1) matrix}
    tol: float = 1e-3  # certify: every layer keeps sigma_max >= (1 - tol) * recorded

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.tol < 1:
            raise ValueError(f"specdef: tol must be in [0, 1), got {self.tol}")

    def base(self) -> SpecDefConfig:
        return SpecDefConfig(**{f: getattr(self, f) for f in SpecDefConfig.__dataclass_fields__})


class SpecDefLock:
    """SpecDef as a registered lock: `apply` runs `specdef()` on the retain task; `certify` checks that
    every lockable weight still has (at least, within tol) the sigma_max recorded at lock time.

    sigma_max is measured on each weight read as an (out, in*kh*kw) matrix by an exact SVD, also
    when the lock ran with conv_mode="operator" (the operator norm needs input sizes, not only
    weights), so recorded and measured values always use the same method.
    """

    name = "specdef"

    def __init__(self, config: SpecDefLockConfig | None = None):
        self.cfg = config or SpecDefLockConfig()
        self.last_report: LockReport | None = None
        self.progress = False  # progress bar and per-epoch log during apply

    @classmethod
    def from_config(cls, data: dict) -> "SpecDefLock":
        return cls(from_dict(SpecDefLockConfig, dict(data)))

    def config(self) -> dict:
        return to_dict(self.cfg)

    def _layers(self, model: nn.Module) -> dict[str, float]:
        lockables = find_lockable(model, self.cfg.include, self.cfg.exclude)
        return {n: v[0] for n, v in sigma_report(lockables, 1)["layers"].items()}

    def apply(self, model: nn.Module, retain: Task | None = None) -> nn.Module:
        if retain is None:
            raise ValueError("specdef: apply needs the retain (authorized) task; got retain=None")
        find_lockable(model, self.cfg.include, self.cfg.exclude)  # ValueError before any training
        report = specdef(model, self.cfg.base(), retain, progress=self.progress)
        from ..api import LOCK_ATTR  # late: trainlock.api imports this package

        setattr(report.model, LOCK_ATTR, {"type": "specdef", "retain_task": retain.name, **report.summary()})
        self.cfg.recorded_sigma_max = self._layers(report.model)
        self.last_report = report
        return report.model

    def certify(self, model: nn.Module) -> list[Certificate]:
        if not self.cfg.recorded_sigma_max:
            raise ValueError("specdef: no sigma_max recorded; apply the lock first")
        try:
            measured = self._layers(model)
        except ValueError:
            measured = {}
        ratios = {n: (measured[n] / r if r > 0 else float("inf")) if n in measured else 0.0
                  for n, r in self.cfg.recorded_sigma_max.items()}
        return [Certificate(
            lock=self.name,
            invariant="min over lockable weights of sigma_max(W) / sigma_max recorded at lock time",
            measured=min(ratios.values()),
            required=1.0 - self.cfg.tol,
            relation=">=",
            proof_of_gap=(
                "SpecDef's argument: the inflated top singular values make the fine-tuning loss's curvature "
                "(and gradient scale) huge along those directions, so a first-order optimizer must take tiny "
                "steps or diverge, which makes learning the bad task slow; an empirical cost claim about "
                "fine-tuning, not an unreachability proof"
            ),
            preservation=(
                "none enforced: nothing keeps sigma_max up; fine-tuning that lowers it shows up here as a "
                "ratio below 1"
            ),
            threat_model="release-time",
            adversary_can_remove=True,
            removal=(
                "an adversary holding the weights can clip or renormalize the singular values (the red team's "
                "`sv-clip` transform) or move the scale between layers through positively homogeneous "
                "activations (the `rescale` transform) before fine-tuning; the lock claims a fine-tuning cost, "
                "not resistance to removal"
            ),
            method="exact SVD (sigma_report) of each weight read as an (out, in*kh*kw) matrix",
            details={"measured": measured, "recorded": dict(self.cfg.recorded_sigma_max), "ratios": ratios,
                     "tol": self.cfg.tol},
        )]


LOCKS.add("specdef", SpecDefLock)
