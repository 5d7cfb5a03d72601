"""Adaptive weight-space attacks, one per module, registered by name in TRANSFORMS."""

# importing each module registers its transform
from . import (  # noqa: F401
    inject,
    merge,
    norm_absorb,
    prune,
    quantize,
    reinit,
    rescale,
    sv_clip,
    svd_chain,
    temperature,
    weight_decay,
)
from .base import TRANSFORMS, Transform, TransformContext, TransformNotApplicable, TransformOutcome

__all__ = ["TRANSFORMS", "Transform", "TransformContext", "TransformNotApplicable", "TransformOutcome"]
