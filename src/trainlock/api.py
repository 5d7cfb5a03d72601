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


STALE = ("lock", "locks", "certificates", "conservation", "hashes", "weights_sha256", "metrics", "stopped")


def certified(model: nn.Module, lock, retain: Task | None, progress: bool = False) -> tuple[nn.Module, dict]:
    """Apply `lock` (any registered Lock) to a copy of `model` and measure what it claims.

    Returns the locked model and the record to store beside it: {"locks": [{"type", "config"}],
    "certificates": [...], "conservation": {...} (when a retain task is given)}.
    """
    from .certify.conservation import conservation_certificate

    if hasattr(lock, "progress"):
        lock.progress = progress
    locked = lock.apply(model, retain)
    record = {"locks": [{"type": lock.name, "config": lock.config()}],
              "certificates": [c.to_dict() for c in lock.certify(locked)]}
    if retain is not None:
        report = getattr(lock, "last_report", None)
        history = report.history if report is not None and report.history else None
        record["conservation"] = conservation_certificate(
            model, locked, retain, history=history, objective_key="retain_loss" if history else None)
    return locked, record


def carried_meta(meta: dict, **updates) -> dict:
    """A base model's metadata for its derived model: stale weights-bound records dropped."""
    out = {k: v for k, v in meta.items() if k not in STALE}
    out.update(updates)
    return out
