"""`prune`: global magnitude pruning of the lockable weights (compactification).

Zeroes the `fraction` (default 0.5) of smallest-magnitude Linear/Conv weights, in place. SpecDef's
inflated top singular directions are spread over many entries of moderate size, so removing the
small entries changes the spectrum and projects the model onto a sparse, lower-capacity subspace.
Not function-preserving. The masks are in `stats["sparsity"]` only as counts (not the tensors).
"""

from __future__ import annotations

import torch.nn as nn

from ...locks.compress import magnitude_prune
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import sigma_max_by_layer, sigma_stats


class Prune:
    """Factory options: fraction (default 0.5), scope ("global" | "layer")."""

    function_preserving = False

    def __init__(self, fraction: float = 0.5, scope: str = "global"):
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"prune: fraction must be in [0, 1], got {fraction!r}")
        if scope not in ("global", "layer"):
            raise ValueError(f"prune: scope must be 'global' or 'layer', got {scope!r}")
        self.fraction, self.scope = float(fraction), scope

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        before = sigma_max_by_layer(model)
        try:
            masks = magnitude_prune(model, self.fraction, self.scope)
        except ValueError as e:
            raise TransformNotApplicable(str(e)) from None
        stats = sigma_stats(before, sigma_max_by_layer(model))
        total = sum(m.numel() for m in masks.values())
        zeros = sum(int((~m).sum()) for m in masks.values())
        stats["sparsity"] = {n: float((~m).sum()) / m.numel() for n, m in masks.items()}
        stats["pruned"], stats["total"] = zeros, total
        note = (
            f"pruned {zeros}/{total} weights ({zeros / max(total, 1):.1%}, {self.scope}); "
            f"max sigma_max {stats['max_sigma_before']:.4g} -> {stats['max_sigma_after']:.4g}"
        )
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("prune", Prune)
