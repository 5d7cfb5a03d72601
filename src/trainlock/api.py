"""The short public API: lock, attack. The CLI, the demo, the red team and the studies go through these.

result = tl.lock(model, "specdef", retain="mnist")         # a name, a Lock, a spec, or a config
result.model, result.record, result.report                   # locked copy, what save() stores, run report
tl.save(result.model, "runs/locked", {"task": "mnist", **result.record})
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from . import tasks as _tasks
from .attacks import AttackResult, FineTuneConfig, finetune
from .certify.conservation import conservation_certificate
from .locks import LOCKS, Lock, LockReport, RecordedLock, lock_factory
from .tasks import Task
from .train import Checkpoint

STALE = ("lock", "locks", "certificates", "conservation", "hashes", "weights_sha256", "metrics", "stopped")


@dataclass
class LockResult:
    """What `lock` returns: the locked copy, the record `save` stores beside it, and the run report."""

    model: nn.Module
    record: (
        dict  # {"locks": [{"type", "config", "record"}], "certificates": [...], "conservation": {...}?, "lock": {...}?}
    )
    report: LockReport | None = None  # history, sigma before / after (locks that train), else None


def as_lock(lock) -> Lock:
    """A Lock from what `lock` accepts: a Lock, any registered lock's config dataclass (`SpecDefConfig(...)`,
    `FrozenConfig(...)`, a plugin's), a registered name (built with its defaults), a spec dict / list, a
    JSON / YAML spec file or inline JSON."""
    if dataclasses.is_dataclass(lock) and not isinstance(lock, type):
        for name in LOCKS.names():
            cls = LOCKS.get(name)
            if type(lock) is cls.config_cls:
                return cls(lock)
        raise ValueError(
            f"{type(lock).__name__} is not the config of a registered lock (locks: "
            f"{', '.join(LOCKS.names())}); a lock from a plugin needs the plugin loaded"
        )
    if isinstance(lock, str) and lock.lstrip()[:1] not in ("{", "[") and not Path(lock).is_file():
        looks_like_file = lock not in LOCKS and (
            Path(lock).suffix.lower() in (".json", ".yaml", ".yml") or "/" in lock or "\\" in lock
        )
        if looks_like_file:  # a spec file that is not there: say so, not "unknown lock"
            raise ValueError(f"lock spec file {lock!r} does not exist")
        return LOCKS.get(lock).from_config({})  # a name; an unknown one raises, listing the valid names
    if isinstance(lock, (str, Path, dict, list, tuple)):
        return lock_factory(lock)
    if isinstance(lock, Lock):
        return lock
    raise ValueError(
        f"lock must be a Lock, a lock config, a lock name ({', '.join(LOCKS.names())}), a spec dict / "
        f"list or a spec file; got {type(lock).__name__}"
    )


def as_task(task: Task | str | None, what: str = "task") -> Task | None:
    """A Task from a Task or a task name (registered, npz:PATH, idx:DIR); None stays None."""
    return None if task is None else _tasks.as_task(task, what)


def lock(
    model: nn.Module,
    lock="specdef",
    retain: Task | str | None = None,
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
) -> LockResult:
    """Lock a copy of `model` and measure what the lock claims; the input model is not modified.

    `lock`: see `as_lock`. `retain`: the authorized task (a Task or its name); locks that train need it,
    and with it the record also holds the conservation certificate (accuracy drop, KL, Pinsker bound).
    `checkpoint`: a lock that trains writes its state there and resumes from it (`Checkpoint.resume`).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"lock needs a torch.nn.Module to lock, got {type(model).__name__}")
    lk = as_lock(lock)
    retain = as_task(retain, "retain")
    out = lk.apply(model, retain, progress=progress, checkpoint=checkpoint)
    locked, report = out.model, out.report
    recorded = RecordedLock(lk, out.record)
    record: dict = {"locks": [recorded.entry()], "certificates": [c.to_dict() for c in recorded.certify(locked)]}
    if report is not None:
        record["lock"] = {"type": lk.name, "retain_task": None if retain is None else retain.name, **report.summary()}
    if retain is not None:
        history = report.history if report is not None and report.history else None
        record["conservation"] = conservation_certificate(
            model, locked, retain, history=history, objective_key="retain_loss" if history else None
        )
        kl = record["conservation"]["kl"]["mean"]
        if not math.isfinite(kl):  # the weights blew up: outputs are inf / nan, nothing a certificate can claim
            raise ValueError(
                f"{lk.name}: the lock diverged: the locked model's outputs on {retain.name} are not finite "
                f"(KL {kl}){f' ({report.stopped})' if report is not None and report.stopped else ''}; "
                "lower the learning rate"
            )
    return LockResult(model=locked, record=record, report=report)


def attack(
    model: nn.Module,
    config: FineTuneConfig | None = None,
    task: Task | str | None = None,
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
) -> AttackResult:
    """Fine-tune a copy of `model` on `task`; returns accuracy, per-epoch curve, steps to target.
    `checkpoint`: write the run's state there and resume from it (`Checkpoint.resume`)."""
    if task is None:
        raise ValueError("attack needs the unauthorized task: a Task or a task name")
    return finetune(model, config or FineTuneConfig(), as_task(task), progress=progress, checkpoint=checkpoint)


def carried_meta(meta: dict, **updates) -> dict:
    """A base model's metadata for its derived model: stale weights-bound records dropped."""
    out = {k: v for k, v in meta.items() if k not in STALE}
    out.update(updates)
    return out
