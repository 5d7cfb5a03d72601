"""`energy`: a loss barrier, L_bad(theta) >= L_auth + delta.

The lock factory note's "energy lock": if L(B) > L(theta) + Delta then "gradient descent cannot
reach B since loss is non-increasing". That monotonicity argument holds only for the loss being
descended: a run that descends the *authorized* loss L_auth (with a small enough step) never
increases L_auth, but nothing stops an adversary from descending the *bad task's* loss L_bad
instead, and then L_bad falls as fast as fine-tuning allows. So this lock certifies a state, not
unreachability: "at these weights, the bad task's cross-entropy is at least delta above the
authorized task's cross-entropy recorded at lock time".

Config: `bad_task` (a task name for `trainlock.tasks.get`), `delta`, `max_samples` (how many
test examples each loss uses, the first ones in the split; default 2000 for speed). `apply`
changes no weight (returns a plain copy): it needs the retain task (ValueError without one),
records `retain_task` and `auth_loss` = L_auth at lock time, and refuses (ValueError) when the
barrier does not hold already. `certify` needs data, unlike the other locks: it loads both tasks
by name (or uses Task objects handed over with `use_tasks`, for derived tasks that have no
registered name) and measures L_bad on the current weights, cross-entropy on the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import tasks as _tasks
from ..config import option
from ..tasks import Task, for_model
from ..train import clone_model, predict
from .base import Certificate, Locked, TaskLock, register_lock


@dataclass
class EnergyConfig:
    bad_task: str | None = option(None, "the task whose loss must stay above the authorized loss + delta")
    delta: float = option(0.5, "the barrier: L_bad >= L_auth + delta")
    max_samples: int = option(2000, "test samples per loss evaluation")

    def __post_init__(self):
        if not isinstance(self.bad_task, str) or not self.bad_task:
            raise ValueError("energy: 'bad_task' must name the task whose loss the barrier bounds")
        if not (isinstance(self.delta, (int, float)) and self.delta >= 0 and math.isfinite(self.delta)):
            raise ValueError(f"energy: delta must be a finite number >= 0, got {self.delta!r}")
        if not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise ValueError(f"energy: max_samples must be an integer >= 1, got {self.max_samples!r}")


@torch.no_grad()
def task_loss(model: nn.Module, task: Task, max_samples: int) -> float:
    """Mean cross-entropy of `model` on the first `max_samples` test examples of `task`."""
    t = for_model(task, model)
    x, y = t.x_test[:max_samples], t.y_test[:max_samples]
    logits = predict(model, x)
    if logits.shape[1] <= int(y.max()):
        raise ValueError(
            f"energy: task {task.name!r} has labels up to {int(y.max())} but the model outputs "
            f"{logits.shape[1]} classes"
        )
    return float(F.cross_entropy(logits, y))


@dataclass
class EnergyRecord:
    retain_task: str | None = option(None, "the authorized task")
    auth_loss: float | None = option(None, "L_auth at lock time")
    bad_loss: float | None = option(None, "L_bad at lock time (informative)")


@register_lock("energy", EnergyConfig, example={"bad_task": "digits-permuted-1", "delta": 0.0, "max_samples": 300})
class EnergyLock(TaskLock):
    """Certify L_bad >= L_auth(lock time) + delta; changes no weight."""

    record_cls = EnergyRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        if retain is None:
            raise ValueError("energy: apply needs the retain (authorized) task to record L_auth")
        if retain.name == self.cfg.bad_task:
            raise ValueError(f"energy: the bad task and the retain task are both {retain.name!r}")
        bad = self.task(self.cfg.bad_task)
        self._tasks[retain.name] = retain
        auth_loss = task_loss(model, retain, self.cfg.max_samples)
        bad_loss = task_loss(model, bad, self.cfg.max_samples)
        if not (bad_loss >= auth_loss + self.cfg.delta):
            raise ValueError(
                f"energy: the barrier does not hold, so the lock cannot be built: L_bad({bad.name}) = "
                f"{bad_loss:.4g} < L_auth({retain.name}) + delta = {auth_loss:.4g} + {self.cfg.delta:g}"
            )
        return Locked(clone_model(model), EnergyRecord(retain.name, auth_loss, bad_loss))

    def certify(self, model: nn.Module, record: EnergyRecord) -> list[Certificate]:
        if record.auth_loss is None:
            raise ValueError("energy: no L_auth recorded; apply the lock first")
        bad_loss = task_loss(model, self.task(self.cfg.bad_task), self.cfg.max_samples)
        details = {
            "bad_task": self.cfg.bad_task,
            "retain_task": record.retain_task,
            "delta": self.cfg.delta,
            "auth_loss_at_lock": record.auth_loss,
            "bad_loss_at_lock": record.bad_loss,
            "max_samples": self.cfg.max_samples,
        }
        if record.retain_task:
            try:
                auth_now = task_loss(model, self.task(record.retain_task), self.cfg.max_samples)
                details.update(auth_loss_now=auth_now, gap_now=bad_loss - auth_now)
            except (_tasks.TaskDataError, _tasks.UnknownNameError) as e:
                details["auth_loss_now"] = f"unavailable: {e}"
        return [
            Certificate(
                lock=self.name,
                invariant=f"cross-entropy of the model on the bad task {self.cfg.bad_task!r} (test split)",
                measured=bad_loss,
                required=record.auth_loss + self.cfg.delta,
                relation=">=",
                proof_of_gap=(
                    "the bad task's loss is at least delta above the authorized loss recorded at lock time, so "
                    "these weights are not in the bad region {theta: L_bad(theta) < L_auth + delta}"
                ),
                preservation=(
                    "only for runs that descend the authorized loss: gradient descent with a small enough step "
                    "does not increase the loss it descends, but it says nothing about L_bad, and an adversary "
                    "descending L_bad lowers it directly; this certifies the current state, not unreachability"
                ),
                threat_model="training-time",
                adversary_can_remove=True,
                removal="fine-tune on the bad task: its loss falls below the barrier as fast as training allows",
                method=f"mean cross-entropy over the first {self.cfg.max_samples} test examples, eval mode",
                details=details,
            )
        ]


__all__ = ["EnergyConfig", "EnergyLock", "EnergyRecord", "task_loss"]
