"""Optimizers by name. Each entry builds a torch optimizer from (params, lr, **options).

One line registers one optimizer; the red team adds more in its own files.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from .registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, **options
) -> torch.optim.Optimizer:
    """Build a registered optimizer; `options` (momentum, weight_decay, ...) go to its constructor."""
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    return OPTIMIZERS.get(name)(params, lr=lr, **options)


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
