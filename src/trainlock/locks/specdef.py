"""SpecDef (Rosati et al., Algorithm 1): inflate the top-k singular values of every weight while a
retain loss keeps the authorized task.

    loss = alpha * retain_loss - (1 - alpha) * mean(top-k singular values of every lockable W)

The mean runs over the union of all layers' top-k values (the paper's (1/n) sum_i sigma_m[i]).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, check_int, check_regex, option, to_dict
from ..linalg.spectral import SpectralState
from ..tasks import Task, for_model
from ..train import (
    Checkpoint,
    LoopConfig,
    LoopHooks,
    LoopResult,
    clone_model,
    distributed,
    evaluate,
    fit,
    resolve_device,
)
from .base import BaseLock, Certificate, Locked, LockReport, register_lock, trained
from .lockable import Lockable, find_lockable, sigma_report

logger = logging.getLogger(__name__)

RETAIN_LOSSES = ("ce", "kl", "ce+kl")
CONV_MODES = ("reshape", "operator")


def specdef_loop(**changes) -> LoopConfig:
    """SpecDef's default loop, the paper's image setting (Appendix B.2): Adadelta at lr 1 with a step-LR
    decay of 0.7 per epoch, one epoch; `changes` override fields, e.g. `specdef_loop(lr=5.0, epochs=5)`."""
    return dataclasses.replace(LoopConfig(optimizer="adadelta", lr=1.0, lr_gamma=0.7), **changes)


@dataclass
class SpecDefConfig:
    """SpecDef hyper-parameters. The loop's defaults are the paper's (`specdef_loop`); build a changed
    loop with `specdef_loop(...)`, not a bare `LoopConfig(...)`, which starts from Adam's defaults."""

    loop: LoopConfig = option(factory=specdef_loop, help="the locking loop")
    alpha: float = option(0.5, "retain-loss weight; 1 - alpha weighs the spectral term")
    top_k: int = option(
        1, "singular values per weight matrix to inflate (Remark A.3: k > 1 keeps the bound non-vacuous)"
    )
    retain: str = option(
        "ce",
        "retain loss: ce (task cross-entropy), kl (KL to the original model), ce+kl",
        choices=lambda: RETAIN_LOSSES,
    )
    include: str | None = option(None, "regex on parameter names to lock (default: every Linear and Conv weight)")
    exclude: str | None = option(None, "regex on parameter names to leave alone")
    conv_mode: str = option(
        "reshape",
        "reshape: a conv kernel as an (out, in*kh*kw) matrix; operator: the true conv operator norm",
        choices=lambda: CONV_MODES,
    )
    tol: float = option(1e-3, "certificate: every layer keeps sigma_max >= (1 - tol) * the value recorded at lock time")

    def __post_init__(self):
        check_float("specdef", "alpha", self.alpha, 0.0, 1.0)
        check_int("specdef", "top_k", self.top_k, 1)
        if self.retain not in RETAIN_LOSSES:
            raise ValueError(f"retain must be one of {RETAIN_LOSSES}, got {self.retain!r}")
        if not 0 <= self.tol < 1:
            raise ValueError(f"specdef: tol must be in [0, 1), got {self.tol}")
        check_regex("specdef", "include", self.include)
        check_regex("specdef", "exclude", self.exclude)

    def to_dict(self) -> dict:
        return to_dict(self)


def spectral_term(lockables: list[Lockable], k: int) -> torch.Tensor:
    """Mean of the union of every lockable weight's top-k singular values (scalar, differentiable), in the
    weights' dtype (fp32) also under bf16 autocast (`--precision bf16`): linalg.spectral switches autocast off."""
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


class _SpecDefState:
    """What a SpecDef run carries in a checkpoint beyond the loop: each weight's power-iteration warm start
    and the epoch's running sums."""

    def __init__(self, lockables: list[Lockable], sums: dict):
        self.lockables, self.sums = lockables, sums

    def state_dict(self) -> dict:
        return {
            "sums": dict(self.sums),
            "spectral": [
                None if lk.state is None else {"V": lk.state.V, "iters": lk.state.iters, "left": lk.state.left}
                for lk in self.lockables
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        self.sums.update(state["sums"])
        for lk, s in zip(self.lockables, state["spectral"], strict=False):
            lk.state = (
                None if s is None else SpectralState(s["V"].to(lk.param.device), s["iters"], s.get("left", False))
            )


def specdef(
    model: nn.Module, cfg: SpecDefConfig, retain: Task, progress: bool = True, checkpoint: Checkpoint | None = None
) -> LockReport:
    """Lock a copy of `model` with SpecDef on the retain task. The input model is not modified.
    `checkpoint`: write the run's state there every `checkpoint.every` steps (and resume from it)."""
    torch.manual_seed(cfg.loop.seed)
    retain = for_model(retain, model)
    locked = clone_model(model)
    lockables = find_lockable(locked, cfg.include, cfg.exclude, cfg.conv_mode, sample=retain.x_train[:1])
    small = [(lk.name, lk.max_k) for lk in lockables if lk.max_k < cfg.top_k]
    if small:
        more = f" (and {len(small) - 1} more)" if len(small) > 1 else ""
        raise ValueError(
            f"specdef: top_k={cfg.top_k} exceeds the rank of {small[0][0]}, which has at most "
            f"{small[0][1]} singular values{more}; lower top_k or leave such weights out with exclude"
        )
    original = None
    if "kl" in cfg.retain:
        original = clone_model(model).eval()
        for p in original.parameters():
            p.requires_grad_(False)
    retain_loss = _retain_loss(cfg.retain, original)
    sigma_before = sigma_report(lockables, cfg.top_k)
    sums: dict[str, float] = {"retain": 0.0, "sigma": 0.0, "n": 0}

    work, work_lockables = locked, lockables  # under --fsdp: a sharded copy, trained, then gathered back

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
        r = retain_loss(m, x, y)
        s = spectral_term(work_lockables, cfg.top_k)
        sums["retain"] += float(r.detach())
        sums["sigma"] += float(s.detach())
        sums["n"] += 1
        return cfg.alpha * r - (1.0 - cfg.alpha) * s, {}

    def on_epoch(epoch: int) -> dict:
        n = max(1, sums["n"])
        log = {
            "retain_loss": sums["retain"] / n,
            "mean_topk_sigma": sums["sigma"] / n,
            "retain_accuracy": evaluate(work, retain),
        }
        sums.update(retain=0.0, sigma=0.0, n=0)
        log_fn = logger.info if progress else logger.debug
        log_fn(
            "lock epoch %d: retain loss %.4f  retain acc %.4f  mean top-%d sigma %.4g",
            epoch,
            log["retain_loss"],
            log["retain_accuracy"],
            cfg.top_k,
            log["mean_topk_sigma"],
        )
        return log

    device = resolve_device(cfg.loop.device)
    locked.to(device)
    if original is not None:
        original.to(device)
    if distributed.fsdp_requested():
        if cfg.conv_mode == "operator":
            raise ValueError("specdef: conv_mode='operator' is not supported with --fsdp; use 'reshape'")
        work = distributed.fully_shard_model(clone_model(locked))
        work_lockables = find_lockable(work, cfg.include, cfg.exclude, cfg.conv_mode)
    hooks = LoopHooks(on_epoch=on_epoch, checkpoint=checkpoint)
    if checkpoint is not None:
        checkpoint.state = _SpecDefState(lockables, sums)

    def run() -> LoopResult:
        result = fit(work, retain, cfg.loop, loss_fn, hooks, desc="lock", progress=progress)
        if work is not locked:  # every rank gathers the trained shards into the plain model
            locked.load_state_dict(distributed.full_state_dict(work))
        return result

    report = trained(model, locked, retain, cfg, run)
    report.sigma_before, report.sigma_after = sigma_before, sigma_report(lockables, cfg.top_k)
    if report.stopped:
        logger.warning("lock stopped early: %s", report.stopped)
    return report


# ---------------------------------------------------------------- the registered lock


@dataclass
class SpecDefRecord:
    recorded_sigma_max: dict = option(factory=dict, help="{weight name: sigma_max} measured right after locking")


@register_lock(
    "specdef", SpecDefConfig, example={"loop": {"lr": 1.0, "max_steps": 10, "batch_size": 32, "device": "cpu"}}
)
class SpecDefLock(BaseLock):
    """SpecDef as a registered lock: `apply` runs `specdef()` on the retain task and records each
    lockable weight's sigma_max; `certify` checks that every one still has (within tol) at least that.

    sigma_max is measured on each weight read as an (out, in*kh*kw) matrix by an exact SVD, also
    when the lock ran with conv_mode="operator" (the operator norm needs input sizes, not only
    weights), so recorded and measured values always use the same method.
    """

    record_cls = SpecDefRecord

    def _layers(self, model: nn.Module) -> dict[str, float]:
        lockables = find_lockable(model, self.cfg.include, self.cfg.exclude)
        return {n: v[0] for n, v in sigma_report(lockables, 1)["layers"].items()}

    def apply(
        self,
        model: nn.Module,
        retain: Task | None = None,
        *,
        progress: bool = False,
        checkpoint: Checkpoint | None = None,
    ) -> Locked:
        if retain is None:
            raise ValueError("specdef: apply needs the retain (authorized) task; got retain=None")
        find_lockable(model, self.cfg.include, self.cfg.exclude)  # ValueError before any training
        report = specdef(model, self.cfg, retain, progress=progress, checkpoint=checkpoint)
        before = model.state_dict()
        if all(torch.equal(v.detach().cpu(), before[k].detach().cpu()) for k, v in report.model.state_dict().items()):
            raise ValueError(
                "specdef: the lock left the model unchanged"
                + (f" ({report.stopped})" if report.stopped else "")
                + "; a certificate would claim a lock that is not there. Lower the learning rate or check "
                "the retain task"
            )
        return Locked(report.model, SpecDefRecord(self._layers(report.model)), report)

    def certify(self, model: nn.Module, record: SpecDefRecord) -> list[Certificate]:
        if not record.recorded_sigma_max:
            raise ValueError("specdef: no sigma_max recorded; apply the lock first")
        try:
            measured = self._layers(model)
        except ValueError:
            measured = {}
        ratios = {
            n: (measured[n] / r if r > 0 else float("inf")) if n in measured else 0.0
            for n, r in record.recorded_sigma_max.items()
        }
        return [
            Certificate(
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
                details={
                    "measured": measured,
                    "recorded": dict(record.recorded_sigma_max),
                    "ratios": ratios,
                    "tol": self.cfg.tol,
                },
            )
        ]
