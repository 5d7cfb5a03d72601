"""`sgd-nesterov`: torch.optim.SGD with Nesterov momentum 0.9."""

from __future__ import annotations

import torch

from .base import OPTIMIZERS


def sgd_nesterov(
    params,
    lr,
    momentum=0.9,  # Nesterov momentum; must be > 0
    weight_decay=0.0,  # L2 penalty added to the gradient
    dampening=0.0,  # must stay 0 for Nesterov (torch rejects anything else)
):
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=True
    )


OPTIMIZERS.add("sgd-nesterov", sgd_nesterov)
