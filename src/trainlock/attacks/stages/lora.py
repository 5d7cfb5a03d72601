"""Train `lora`: low-rank adapters (and the head) trained, merged back at the end (attacks/lora.py, via peft)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ...config import check_float, check_int, option
from ..finetune import finetune
from .base import AttackState, register_stage


@register_stage("train", "lora", example={"train": "lora", "options": {"lora": {"rank": 2}}})
@dataclass
class LoRA:
    """The spec's fine-tuning with LoRA adapters of `rank` on every Linear but the head (a CNN whose only Linear
    is its head: on its ungrouped convolutions; see attacks/lora.py). No lock monitor: the
    adapters wrap the weights a lock measures until they are merged (the final model is re-certified)."""

    rank: int = option(8, "LoRA rank")
    alpha: float | None = option(None, "LoRA scaling alpha (default: 2 x rank)")
    requires: ClassVar[tuple[str, ...]] = ("peft",)  # optional packages the stage imports

    def __post_init__(self):
        check_int("lora", "rank", self.rank, 1)
        check_float("lora", "alpha", self.alpha, 0.0, open_low=True, allow_none=True)

    def __call__(self, state: AttackState) -> None:
        cfg = dataclasses.replace(state.finetune, lora=self.rank, lora_alpha=self.alpha)
        state.trained(finetune(state.model, cfg, state.train_task, progress=False))
