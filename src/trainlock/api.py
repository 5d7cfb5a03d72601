"""The short public API: lock, attack, evaluate. The CLI is a thin layer over these."""

from __future__ import annotations

import torch.nn as nn

from .attacks import AttackResult, FineTuneConfig, finetune
from .locks import LockReport, SpecDefConfig, specdef
from .tasks import Task

LOCK_ATTR = "trainlock_lock"  # a locked module carries its lock summary here; save() records it


def lock_report(model: nn.Module, config: SpecDefConfig, retain: Task, progress: bool = False) -> LockReport:
    """Lock a copy of `model` with SpecDef; returns the report (locked model, history, sigma stats)."""
    report = specdef(model, config, retain, progress=progress)
    setattr(report.model, LOCK_ATTR, {"type": "specdef", "retain_task": retain.name, **report.summary()})
    return report


def lock(model: nn.Module, config: SpecDefConfig, retain: Task, progress: bool = False) -> nn.Module:
    """Lock a copy of `model` with SpecDef on the retain task; returns the locked model."""
    return lock_report(model, config, retain, progress).model


def attack(model: nn.Module, config: FineTuneConfig, task: Task, progress: bool = False) -> AttackResult:
    """Fine-tune a copy of `model` on `task`; returns accuracy, per-epoch curve, steps to target."""
    return finetune(model, config, task, progress=progress)
