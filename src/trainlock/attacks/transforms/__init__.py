"""Adaptive weight-space attacks, one per module, registered by name in TRANSFORMS."""

from .base import TRANSFORMS, Transform, TransformContext, TransformNotApplicable, TransformOutcome

# importing each module registers its transform
from . import inject, merge, norm_absorb, prune, quantize, rescale, sv_clip, svd_chain, temperature, weight_decay  # noqa: E402,F401,E501

__all__ = ["TRANSFORMS", "Transform", "TransformContext", "TransformNotApplicable", "TransformOutcome"]
