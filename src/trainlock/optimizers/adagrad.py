"""`adagrad`: torch.optim.Adagrad (per-coordinate steps shrink with the accumulated squared gradient)."""

from __future__ import annotations

import torch

from .base import OPTIMIZERS


def adagrad(
    params,
    lr,
    weight_decay=0.0,  # L2 penalty added to the gradient
    momentum=None,  # ignored (Adagrad has no momentum); accepted because LoopConfig may pass it
    lr_decay=0.0,  # the step size is lr / (1 + (t - 1) * lr_decay)
    initial_accumulator_value=0.0,  # starting value of the squared-gradient sums
    eps=1e-10,  # added to the root of the squared-gradient sums
):
    return torch.optim.Adagrad(
        params,
        lr=lr,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
    )


OPTIMIZERS.add("adagrad", adagrad)
