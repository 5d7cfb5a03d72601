"""Data `backdoor`: a poisoned training split; the attack success rate before and after (attacks/backdoor.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import check_float, option
from ..backdoor import BackdoorConfig, backdoor_metrics, poison
from .base import AttackState, register_stage


@register_stage("data", "backdoor", example={"data": "backdoor", "options": {"backdoor": {"poison_fraction": 0.3}}})
@dataclass
class Backdoor:
    """Poison part of the training split (a patch on images and vectors, a prefix on text before tokenization);
    the row gets clean accuracy, clean F1 and ASR before training (`backdoor_before`) and on the final model
    (`backdoor_after`)."""

    poison_fraction: float = option(
        0.1, "fraction of the training split poisoned (the suite calibrates it on the unlocked base)"
    )

    def __post_init__(self):
        check_float("backdoor", "poison_fraction", self.poison_fraction, 0.0, 1.0)

    def check(self, state: AttackState) -> str | None:
        if state.tokens and state.text is None:
            return "backdoor: the prefix trigger is stamped on text before tokenization; this run was given tokens only"
        return None

    def __call__(self, state: AttackState) -> None:
        tokens = state.tokens
        bd = BackdoorConfig(
            seed=state.seed, poison_fraction=self.poison_fraction, trigger="prefix" if tokens else "patch"
        )
        clean = state.text if tokens else state.adapted(state.task)
        state.train_task = state.adapted(poison(clean, bd))
        state.row.backdoor_before = backdoor_metrics(state.model, clean, bd)

        def after(s: AttackState) -> None:  # accuracy, F1 and ASR of the final model
            s.row.backdoor_after = backdoor_metrics(s.model, clean if tokens else s.adapted(s.task), bd)

        state.after.append(after)
