"""`temperature-reset`: rescale the classifier head so the logits have unit spread on sample inputs.

A lock can hide in the logit scale: blown-up logits saturate the softmax, so cross-entropy
gradients vanish on the training set (or explode on new labels). Multiplying the head's weight and
bias by t > 0 multiplies every logit by t: the argmax (and accuracy) is unchanged, the softmax
probabilities are not (a temperature change), so this is argmax-preserving but not
function-preserving. t is chosen so that the logits on `ctx.sample` have unit standard deviation
across classes (root-mean-square over the batch of the per-sample std).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...models import find_head
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome


def logit_spread(logits: torch.Tensor) -> float:
    """RMS over the batch of each sample's standard deviation across classes."""
    return float(logits.double().var(dim=-1, unbiased=False).mean().sqrt())


class TemperatureReset:
    """Factory options: target (the logit spread to reach, default 1)."""

    function_preserving = False

    def __init__(self, target: float = 1.0):
        if not float(target) > 0:
            raise ValueError(f"temperature-reset: target must be > 0, got {target!r}")
        self.target = float(target)

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        if ctx is None or ctx.sample is None or len(ctx.sample) == 0:
            raise TransformNotApplicable("temperature-reset needs sample inputs (ctx.sample) to measure the logits")
        try:
            name, head = find_head(model)
        except ValueError as e:
            raise TransformNotApplicable(str(e)) from None
        if head.out_features < 2:
            raise TransformNotApplicable(f"classifier head {name!r} has one output: no logit spread to set")
        p = head.weight
        was = model.training
        model.eval()
        with torch.no_grad():
            logits = model(ctx.sample.to(p.device))
        model.train(was)
        if logits.dim() != 2 or logits.shape[-1] != head.out_features:
            raise TransformNotApplicable(f"model output {tuple(logits.shape)} is not the head {name!r}'s logits")
        spread = logit_spread(logits)
        if not spread > 0 or spread != spread or spread == float("inf"):
            raise TransformNotApplicable(f"logit spread on the sample is {spread}: cannot rescale")
        t = self.target / spread
        with torch.no_grad():
            head.weight.mul_(t)
            if head.bias is not None:
                head.bias.mul_(t)
        note = (
            f"argmax-preserving: scaled head {name!r} by {t:.4g} so the logit spread on "
            f"{len(ctx.sample)} samples goes {spread:.4g} -> {self.target:g}"
        )
        stats = {"head": name, "factor": t, "spread_before": spread, "spread_after": spread * t}
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("temperature-reset", TemperatureReset)
