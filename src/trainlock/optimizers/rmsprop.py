"""`rmsprop`: torch.optim.RMSprop (gradient divided by a running RMS of recent gradients)."""

from __future__ import annotations

import torch

from .base import OPTIMIZERS


def rmsprop(
    params,
    lr,
    weight_decay=0.0,  # L2 penalty added to the gradient
    momentum=0.0,  # heavy-ball momentum on the RMS-scaled step (0: none, torch's default)
    alpha=0.99,  # decay of the running mean of squared gradients
    eps=1e-8,  # added to the RMS in the denominator
    centered=False,  # True: divide by the running variance instead (subtracts the mean gradient)
):
    return torch.optim.RMSprop(
        params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered
    )


OPTIMIZERS.add("rmsprop", rmsprop)
