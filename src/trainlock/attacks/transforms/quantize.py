"""`quantize`: symmetric uniform fake-quantization of the lockable weights (compactification).

Rounds every Linear/Conv weight to 2^bits - 1 levels (default bits=4), per tensor or per output
channel, in place. Quantization snaps the model onto a finite grid: small, carefully balanced
perturbations a lock relies on are erased, while the coarse function usually survives.
Not function-preserving.
"""

from __future__ import annotations

import torch.nn as nn

from ...locks.compress import quantize
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import sigma_max_by_layer, sigma_stats


class Quantize:
    """Factory options: bits (default 4), per_channel (default False)."""

    function_preserving = False

    def __init__(self, bits: int = 4, per_channel: bool = False):
        if not 1 <= int(bits) <= 16:
            raise ValueError(f"quantize: bits must be in [1, 16], got {bits!r}")
        self.bits, self.per_channel = int(bits), bool(per_channel)

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        before = sigma_max_by_layer(model)
        try:
            q = quantize(model, self.bits, self.per_channel)
        except ValueError as e:
            raise TransformNotApplicable(str(e)) from None
        stats = sigma_stats(before, sigma_max_by_layer(model))
        stats["quantization"] = q
        worst = max(v["mse"] for v in q["layers"].values())
        note = (
            f"quantized {len(q['layers'])} weight(s) to {self.bits} bits "
            f"({'per channel' if self.per_channel else 'per tensor'}, worst mse {worst:.3g}); "
            f"max sigma_max {stats['max_sigma_before']:.4g} -> {stats['max_sigma_after']:.4g}"
        )
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("quantize", Quantize)
