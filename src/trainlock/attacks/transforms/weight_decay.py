"""`weight-decay-pull`: the closed-form pull of pure weight decay, theta -> factor * theta.

Every weight matrix (parameter with >= 2 dimensions) is multiplied by `factor` (default 0.5).
This does not target the lock: SpecDef-inflated directions shrink by the same factor as all the
others, so the spectrum's *shape* (the ratio sigma_max / bulk) is unchanged. The point is a bounded
region: with weight decay lam, any fine-tuning run whose objective L + lam ||theta||^2 stays below C
(L >= 0) is confined to ||theta|| <= sqrt(C / lam) (`trainlock.locks.compress.sublevel_radius`), and
starting from a pulled-in point puts the run well inside that ball, where the inflated sigma_max
(and the gradient scale it induces) is proportionally smaller. Biases and norms are left alone;
with ReLU networks this is a rescaling of the logits (argmax mostly kept), not function-preserving.
"""

from __future__ import annotations

import torch.nn as nn

from ...locks.compress import weight_decay_pull
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import sigma_max_by_layer, sigma_stats


class WeightDecayPull:
    """Factory options: factor (default 0.5, must be in (0, 1])."""

    function_preserving = False

    def __init__(self, factor: float = 0.5):
        if not 0.0 < float(factor) <= 1.0:
            raise ValueError(f"weight-decay-pull: factor must be in (0, 1], got {factor!r}")
        self.factor = float(factor)

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        before = sigma_max_by_layer(model)
        res = weight_decay_pull(model, self.factor)
        if res["tensors"] == 0:
            raise TransformNotApplicable("the model has no weight matrix (no parameter with >= 2 dimensions)")
        stats = sigma_stats(before, sigma_max_by_layer(model))
        stats.update(res)
        note = (
            f"multiplied {res['tensors']} weight tensor(s) by {self.factor:g}; squared norm "
            f"{res['sq_norm_before']:.4g} -> {res['sq_norm_after']:.4g}"
        )
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("weight-decay-pull", WeightDecayPull)
