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
from .apply import Applied, apply_transforms, fold_back
from .base import TRANSFORMS, Transform, TransformContext, TransformNotApplicable, TransformOutcome

__all__ = [
    "TRANSFORMS",
    "Applied",
    "Transform",
    "TransformContext",
    "TransformNotApplicable",
    "TransformOutcome",
    "apply_transforms",
    "fold_back",
]
