"""Start `scratch`: the released architecture re-initialized (the baseline an attacker can always reach)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...train import reinitialized
from .base import AttackState, register_stage


@register_stage("start", "scratch")
@dataclass
class Scratch:
    """Fresh weights of the released architecture (seed: the run's); no released weight, no lock to watch."""

    fresh: ClassVar[bool] = True
    authorized: ClassVar[bool] = False  # random weights hold no authorized task: its columns stay empty

    def __call__(self, state: AttackState) -> None:
        state.model = reinitialized(state.released, state.seed)
