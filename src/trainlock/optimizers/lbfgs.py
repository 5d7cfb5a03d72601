"""`lbfgs`: torch.optim.LBFGS run as a minibatch optimizer (one L-BFGS iteration per batch).

Each training step calls `opt.step(closure)` (step mode "closure"); the strong-Wolfe line search
may re-evaluate the closure on the same batch several times within that one iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import OPTIMIZERS, options


@dataclass
class LBFGSOptions:
    """`lbfgs` options beyond lr, weight_decay and momentum (keyword arguments of the factory)."""

    history_size: int = field(default=10, metadata={"help": "curvature pairs (s, y) kept for the two-loop recursion"})
    max_iter: int = field(default=1, metadata={"help": "L-BFGS iterations per minibatch step"})
    max_eval: int = field(
        default=10,
        metadata={"help": "closure calls per step incl. line search (torch's 1.25 * max_iter would starve it)"},
    )
    line_search_fn: str | None = field(
        default="strong_wolfe", metadata={"help": "'strong_wolfe' or None (fixed step lr)"}
    )
    tolerance_grad: float = field(
        default=1e-7, metadata={"help": "stop the inner loop when max |grad| falls below this"}
    )
    tolerance_change: float = field(
        default=1e-9, metadata={"help": "stop the inner loop when the step or loss change falls below this"}
    )


def lbfgs(
    params,
    lr,
    weight_decay=0.0,  # L-BFGS has none: only 0 is accepted (put an L2 term in the loss instead)
    momentum=None,  # ignored (no momentum); accepted because LoopConfig may pass it
    **extra,  # the fields of LBFGSOptions
):
    o = options(LBFGSOptions, "lbfgs", extra)
    if weight_decay:
        raise ValueError(f"lbfgs has no weight decay; got weight_decay={weight_decay}")
    opt = torch.optim.LBFGS(
        params,
        lr=lr,
        max_iter=o.max_iter,
        max_eval=o.max_eval,
        history_size=o.history_size,
        line_search_fn=o.line_search_fn,
        tolerance_grad=o.tolerance_grad,
        tolerance_change=o.tolerance_change,
    )
    opt.trainlock_step = "closure"
    return opt


OPTIMIZERS.add("lbfgs", lbfgs)
