"""Start `distill`: a fresh student trained to match the released model's logits (see attacks/distill.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import check_int, option
from ..distill import DistillConfig, distill
from .base import AttackState, register_stage


@register_stage("start", "distill", example={"start": "distill", "options": {"distill": {"steps": 5}}})
@dataclass
class Distill:
    """The released function copied into fresh weights on the attacker's inputs; the distillation steps count
    in the run's cost and its numbers go to the row's `distill`."""

    steps: int = option(500, "distillation steps (counted in the run's cost)")
    fresh: ClassVar[bool] = True

    def __post_init__(self):
        check_int("distill", "steps", self.steps, 1)

    def __call__(self, state: AttackState) -> None:
        cfg = DistillConfig(steps=self.steps, batch_size=state.spec.loop.batch_size, seed=state.seed)
        state.model, info = distill(state.released, cfg, state.task, state.device)
        state.row.distill = info
        state.spend(info["steps"])
