"""Adaptive weight-space attacks, one per module, registered by name in TRANSFORMS."""

from .base import TRANSFORMS, Transform, TransformContext, TransformNotApplicable, TransformOutcome

__all__ = ["TRANSFORMS", "Transform", "TransformContext", "TransformNotApplicable", "TransformOutcome"]
