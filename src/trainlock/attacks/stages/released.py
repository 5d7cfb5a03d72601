"""Start `released`: a copy of the released weights (the attack the lock is built against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...train import clone_model
from .base import AttackState, register_stage


@register_stage("start", "released")
@dataclass
class Released:
    """The released weights, copied (the state's `released` model is never changed)."""

    fresh: ClassVar[bool] = False

    def __call__(self, state: AttackState) -> None:
        state.model = clone_model(state.released)
