"""Attacks on locks. Each attack lives in its own module."""

from .finetune import AttackResult, FineTuneConfig, finetune

__all__ = ["AttackResult", "FineTuneConfig", "finetune"]
