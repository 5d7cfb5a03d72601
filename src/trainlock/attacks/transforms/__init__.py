"""Adaptive weight-space attacks, one per module, registered by name in TRANSFORMS."""

# importing each module registers its transform
from . import inject, merge, norm_absorb, prune, quantize, rescale, sv_clip, svd_chain, temperature, weight_decay  # noqa: E402,F401,E501
from .base import TRANSFORMS, Transform, TransformContext, TransformNotApplicable, TransformOutcome

__all__ = ["TRANSFORMS", "Transform", "TransformContext", "TransformNotApplicable", "TransformOutcome"]
