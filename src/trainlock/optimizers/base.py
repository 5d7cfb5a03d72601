"""Optimizers by name. Each entry builds a torch optimizer from (params, lr, **options).

sgd, adam, adamw and adadelta are registered here; the red team's zoo (one file each in this
package, `ZOO`) registers on first use: looking up a name that is not here, or listing the names,
imports them, so `import trainlock` stays cheap.
A factory that also takes `model` receives the nn.Module (K-FAC needs its layers). An optimizer
instance may set `trainlock_step` to tell the training loop how to step it:
  "plain"   (default) loss.backward(); opt.step()
  "closure" opt.step(closure) where closure re-evaluates the loss (L-BFGS)
  "hessian" loss.backward(create_graph=True); opt.step() (Hessian-vector products: AdaHessian)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

from ..config import from_dict
from ..registry import Registry

C = TypeVar("C")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
ZOO = ("adagrad", "adahessian", "kfac", "lbfgs", "muon", "nesterov", "psgd_kron", "rmsprop", "soap", "sophia", "xmat")


def _load_zoo() -> None:
    import importlib

    for mod in ZOO:
        importlib.import_module(f"{__package__}.{mod}")


OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", load=_load_zoo)


STEP_MODES = ("plain", "closure", "hessian")


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, model: torch.nn.Module | None = None, **options
) -> torch.optim.Optimizer:
    """Build a registered optimizer; `options` (momentum, weight_decay, ...) go to its constructor."""
    import inspect

    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    factory = OPTIMIZERS.get(name)
    if "model" in inspect.signature(factory).parameters:
        options["model"] = model
    return factory(params, lr=lr, **options)


def step_mode(opt: torch.optim.Optimizer) -> str:
    """How the training loop must step `opt` (see the module docstring)."""
    mode = getattr(opt, "trainlock_step", "plain")
    if mode not in STEP_MODES:
        raise ValueError(f"optimizer step mode {mode!r} is not one of {STEP_MODES}")
    return mode


def _sgd(params, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def _adam(params, lr, weight_decay=0.0, momentum=None):
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _adamw(params, lr, weight_decay=0.01, momentum=None):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _adadelta(params, lr, weight_decay=0.0, momentum=None):
    return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS.add("sgd", _sgd)  # SGD with momentum 0.9 unless momentum=0
OPTIMIZERS.add("adam", _adam)
OPTIMIZERS.add("adamw", _adamw)  # decoupled weight decay 0.01 by default, as in the paper's attack
OPTIMIZERS.add("adadelta", _adadelta)  # the paper trains and locks with Adadelta, lr 1


def options(cls: type[C], name: str, given: dict) -> C:
    """An optimizer's extra options as its options dataclass; an unknown key names the valid ones."""
    try:
        return from_dict(cls, given)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
