"""Train `finetune`: every weight trained with the spec's FineTuneConfig (see attacks/finetune.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..finetune import finetune
from .base import AttackState, register_stage


@register_stage("train", "finetune")
@dataclass
class FineTune:
    """Full fine-tuning; on a plain run (no transform) of a model with recorded locks, a LockMonitor notes the
    first step at which each certificate broke."""

    def __call__(self, state: AttackState) -> None:
        state.trained(finetune(state.model, state.finetune, state.train_task, progress=False, monitor=state.monitor()))
