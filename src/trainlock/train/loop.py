"""One training loop shared by base training, locking and attacks, plus evaluation helpers.

The loop owns batching, the optimizer step, a step-LR schedule, a progress bar, and the
non-finite guard: on a NaN/Inf loss it restores the last good snapshot and stops, saying where.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import option, to_dict
from ..optimizers import make_optimizer, step_mode
from ..tasks import Task

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled minibatches of (x, y); the order is fixed by `seed`."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    for i in range(0, len(y), batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    return F.cross_entropy(model(x), y), {}


def _optimizer_names() -> list[str]:
    from ..optimizers import OPTIMIZERS

    return OPTIMIZERS.names()


@dataclass
class LoopConfig:
    """How to run the training loop; base training, locks, attacks and studies nest one of these."""

    optimizer: str = option("adam", "optimizer by name", choices=_optimizer_names)
    lr: float = option(1e-3, "learning rate")
    epochs: int = option(1, "passes over the training split")
    batch_size: int = option(64, "minibatch size")
    seed: int = option(0, "random seed (data order, fresh heads)")
    max_steps: int | None = option(None, "stop after this many optimizer steps in all (default: every epoch)")
    lr_gamma: float | None = option(None, "step-LR decay per epoch (the paper: 0.7); unset or 0: a constant rate")
    weight_decay: float | None = option(None, "weight decay (default: the optimizer's own)")
    momentum: float | None = option(None, "SGD momentum (default 0.9)")
    device: str = option("auto", "cpu, cuda, or auto (CUDA when present)")
    snapshot_every: int = option(200, "steps between last-good-state snapshots (non-finite guard)", cli=False)

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass
class LoopResult:
    steps: int = 0
    losses: list[float] = field(default_factory=list)  # one per step
    epochs: list[dict] = field(default_factory=list)  # whatever on_epoch returned, per epoch
    stopped: str | None = None  # why the loop stopped early (non-finite loss, callback), if it did


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    opts = {}
    if cfg.weight_decay is not None:
        opts["weight_decay"] = cfg.weight_decay
    if cfg.momentum is not None:
        opts["momentum"] = cfg.momentum
    params = [p for p in model.parameters() if p.requires_grad]
    return make_optimizer(cfg.optimizer, params, cfg.lr, model=model, **opts)


def _step(opt, mode: str, model, loss_fn: LossFn, xb, yb) -> tuple[float, dict, bool]:
    """One optimizer step. Returns (loss value before the step, extras, ok); ok=False on a
    non-finite loss, in which case no update was made (except inside an L-BFGS closure)."""
    if mode == "closure":
        box: dict = {}

        def closure():
            opt.zero_grad(set_to_none=True)
            loss, extras = loss_fn(model, xb, yb)
            box.setdefault("first", (float(loss.detach()), extras))
            if math.isfinite(float(loss.detach())):
                loss.backward()
            return loss

        opt.step(closure)
        value, extras = box["first"]
        finite = math.isfinite(value) and all(torch.isfinite(p).all() for p in model.parameters())
        return value, extras, finite
    loss, extras = loss_fn(model, xb, yb)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value, extras, False
    opt.zero_grad(set_to_none=True)
    if mode == "hessian":
        with warnings.catch_warnings():  # the grad<->param reference cycle is broken below
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            loss.backward(create_graph=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        loss.backward()
        opt.step()
    return value, extras, True


def fit(
    model: nn.Module,
    task: Task,
    cfg: LoopConfig,
    loss_fn: LossFn = cross_entropy,
    on_step: Callable[[int, float, dict], bool | None] | None = None,
    on_epoch: Callable[[int], dict] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> LoopResult:
    """Minimise `loss_fn` over `task`'s training split. Returns the per-step losses and epoch logs.

    `on_step(step, loss, extras)` may return True to stop; `on_epoch(epoch)` returns a dict to log.
    A non-finite loss restores the last good snapshot and stops with `result.stopped` set.
    """
    device = resolve_device(cfg.device)
    model.to(device).train()
    opt = _optimizer(model, cfg)
    mode = step_mode(opt)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=cfg.lr_gamma) if cfg.lr_gamma else None
    x, y = task.x_train, task.y_train
    per_epoch = math.ceil(len(y) / cfg.batch_size)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.epochs)
    res = LoopResult()
    good, good_step = _snapshot(model), 0
    bar = tqdm(total=total, desc=desc, disable=None if progress else True, leave=False)
    try:
        for epoch in range(cfg.epochs):
            for xb, yb in batches(x, y, cfg.batch_size, seed=cfg.seed * 100_003 + epoch):
                if res.steps >= total:
                    break
                due = res.steps % cfg.snapshot_every == 0 and res.steps > 0
                candidate = _snapshot(model) if due else None  # good once its loss proves finite
                value, extras, ok = _step(opt, mode, model, loss_fn, xb.to(device), yb.to(device))
                if ok and candidate is not None:
                    good, good_step = candidate, res.steps
                if not ok:
                    model.load_state_dict(good)
                    res.stopped = (
                        f"non-finite loss ({value}) at epoch {epoch + 1}, step {res.steps + 1}; "
                        f"restored the last good state (from step {good_step})"
                    )
                    return res
                res.steps += 1
                res.losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                if on_step is not None and on_step(res.steps, value, extras):
                    res.stopped = f"stopped by callback at step {res.steps}"
                    break
            if sched is not None:
                sched.step()
            log = {"epoch": epoch + 1, "step": res.steps}
            if on_epoch is not None:
                log.update(on_epoch(epoch + 1))
            res.epochs.append(log)
            if res.stopped or res.steps >= total:
                break
    finally:
        bar.close()
    return res


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy, detached from any autograd history."""
    return copy.deepcopy(model)
