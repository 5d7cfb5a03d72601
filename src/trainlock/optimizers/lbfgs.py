"""`lbfgs`: torch.optim.LBFGS run as a minibatch optimizer (one L-BFGS iteration per batch).

Each training step calls `opt.step(closure)` (step mode "closure"); the strong-Wolfe line search
may re-evaluate the closure on the same batch several times within that one iteration.
"""

from __future__ import annotations

import torch

from ..train.optim import OPTIMIZERS


def lbfgs(
    params,
    lr,
    history_size=10,  # curvature pairs (s, y) kept for the two-loop recursion
    max_iter=1,  # L-BFGS iterations per minibatch step
    max_eval=10,  # closure calls per step incl. line search (torch's 1.25 * max_iter would starve it)
    line_search_fn="strong_wolfe",  # "strong_wolfe" or None (fixed step lr)
    tolerance_grad=1e-7,  # stop the inner loop when max |grad| falls below this
    tolerance_change=1e-9,  # stop the inner loop when the step or loss change falls below this
    weight_decay=0.0,  # L-BFGS has none: only 0 is accepted (put an L2 term in the loss instead)
    momentum=None,  # ignored (no momentum); accepted because LoopConfig may pass it
):
    if weight_decay:
        raise ValueError(f"lbfgs has no weight decay; got weight_decay={weight_decay}")
    opt = torch.optim.LBFGS(
        params, lr=lr, max_iter=max_iter, max_eval=max_eval, history_size=history_size,
        line_search_fn=line_search_fn, tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
    )
    opt.trainlock_step = "closure"
    return opt


OPTIMIZERS.add("lbfgs", lbfgs)
