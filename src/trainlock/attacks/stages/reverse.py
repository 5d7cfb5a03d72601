"""Fold `reverse`: the transforms' folds, last first, so the final model has the released architecture."""

from __future__ import annotations

from dataclasses import dataclass

from ..transforms import fold_back
from .base import AttackState, register_stage


@register_stage("fold", "reverse")
@dataclass
class Reverse:
    """Undo the training-time reparametrizations (layer injection, SVD chains) on the trained model."""

    def __call__(self, state: AttackState) -> None:
        state.model = fold_back(state.model, state.folds)
