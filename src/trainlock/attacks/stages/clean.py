"""Data `clean`: the attack task as it is."""

from __future__ import annotations

from dataclasses import dataclass

from .base import AttackState, register_stage


@register_stage("data", "clean")
@dataclass
class Clean:
    """Train on the attack task's own training split."""

    def __call__(self, state: AttackState) -> None:
        state.train_task = state.task
