"""The lock interface and its certificate.

A lock turns a model into a locked model (`apply`) and measures, from the weights alone, the
invariant it claims (`certify`). Its certificate says what is claimed, the measured and required
values, why the invariant blocks the bad region (proof of gap), why training keeps it
(preservation), and the threat model: a release-time lock against an adversary who holds the
weights (SpecDef), or a training-time constraint that protects one's own training run (frozen
layers, spectral caps, sparsity), which an adversary holding the weights can simply remove.

Register one lock class per file with `@register_lock` (it reads the class's `name`); the class is
built from its config dict: `LockClass.from_config(dict)`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import operator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch.nn as nn

from .. import tasks as _tasks
from ..config import from_dict, to_dict
from ..registry import Registry
from ..tasks import Task
from ..train import Checkpoint

RELATIONS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}
THREAT_MODELS = ("release-time", "training-time")


def now() -> str:
    """UTC time stamp for certificates (ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Certificate:
    """What one lock claims about one set of weights, and whether the claim holds."""

    lock: str  # registered lock type, e.g. "spectral-cap"
    invariant: str  # what is measured, e.g. "max over layers of sigma_max(W)"
    measured: float
    required: float
    relation: str  # ">=", "<=" or "==": the claim is `measured <relation> required`
    proof_of_gap: str  # why the invariant keeps the model out of the bad region
    preservation: str  # why training (with the lock's mechanism) keeps the invariant
    threat_model: str  # "release-time" or "training-time"
    adversary_can_remove: bool  # can someone holding the weights simply undo it?
    removal: str  # how (or why not)
    method: str  # how `measured` was computed
    measured_at: str = field(default_factory=now)
    details: dict = field(default_factory=dict)  # per-layer values, names, tolerances
    holds: bool | None = None  # filled by __post_init__ from measured, relation, required

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {sorted(RELATIONS)}, got {self.relation!r}")
        if self.threat_model not in THREAT_MODELS:
            raise ValueError(f"threat_model must be one of {THREAT_MODELS}, got {self.threat_model!r}")
        self.holds = bool(RELATIONS[self.relation](self.measured, self.required))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Certificate":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and k != "holds"})


@dataclass
class LockReport:
    """What a lock run that trains (SpecDef) did: the locked model, per-epoch log, sigma before and after."""

    model: nn.Module
    config: dict
    history: list[dict] = field(default_factory=list)
    sigma_before: dict = field(default_factory=dict)
    sigma_after: dict = field(default_factory=dict)
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    stopped: str | None = None  # set when the run stopped early (e.g. non-finite loss)
    steps: int = 0  # optimizer steps taken
    loop_s: float = 0.0  # wall seconds of the training loop (no evaluation before or after)

    def summary(self) -> dict:
        """JSON-ready metrics (no tensors, no model)."""
        return {
            "config": self.config,
            "history": self.history,
            "sigma_before": self.sigma_before,
            "sigma_after": self.sigma_after,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "stopped": self.stopped,
            "steps": self.steps,
            "loop_s": self.loop_s,
        }


@runtime_checkable
class Lock(Protocol):
    """A lock: everything the factory (`from_config`), `trainlock.lock` and the verifier call.

    `apply` returns the locked model (a copy; the input is not modified) and keeps what it measured
    (recorded values) on the lock itself, so `config()` then returns the config plus those records
    and `from_config(lock.config())` rebuilds a lock that can `certify`. `report()` is the last
    apply's run report (per-epoch history, sigma before / after) for locks that train, else None.
    """

    name: ClassVar[str]
    progress: bool  # show a progress bar and per-epoch logs during apply
    checkpoint: Checkpoint | None  # where a lock that trains writes resumable state (others ignore it)

    @classmethod
    def from_config(cls, data: dict) -> "Lock": ...

    def config(self) -> dict: ...

    def apply(self, model: nn.Module, retain: Task | None = None) -> nn.Module: ...

    def certify(self, model: nn.Module) -> list[Certificate]: ...

    def report(self) -> LockReport | None: ...

    def use_tasks(self, *tasks: Task) -> "Lock": ...


class LockDefaults:
    """What most locks share: no progress output, no run report, no Task objects to hand over."""

    progress: bool = False
    checkpoint: Checkpoint | None = None

    def report(self) -> LockReport | None:
        return None

    def use_tasks(self, *tasks: Task) -> "LockDefaults":
        return self


class ConfiguredLock(LockDefaults):
    """A lock held by one config dataclass (`config_cls`) and the report of its last `apply` (`self._report`):
    the constructor, `from_config`, `config` and `report` every such lock would otherwise write again."""

    config_cls: ClassVar[type]

    def __init__(self, config=None):
        self.cfg = dataclasses.replace(config or self.config_cls())
        self._report: LockReport | None = None

    @classmethod
    def from_config(cls, data: dict):
        return cls(from_dict(cls.config_cls, dict(data)))

    def config(self) -> dict:
        return to_dict(self.cfg)

    def report(self) -> LockReport | None:
        return self._report


class TaskLock(ConfiguredLock):
    """A ConfiguredLock whose config names tasks besides the retain task (a restricted domain, a bad task):
    Task objects handed over with `use_tasks` (derived tasks that have no registry name) are used first,
    then the task registry."""

    def __init__(self, config=None, tasks: dict[str, Task] | None = None):
        super().__init__(config)
        self._tasks: dict[str, Task] = dict(tasks or {})

    def use_tasks(self, *tasks: Task) -> "TaskLock":
        for t in tasks:
            self._tasks[t.name] = t
        return self

    def task(self, name: str) -> Task:
        """The task called `name`: a handed-over one, else loaded from the registry (once)."""
        if name not in self._tasks:
            self._tasks[name] = _tasks.get(name)
        return self._tasks[name]


LOCKS: Registry[type] = Registry("lock")


def register_lock(cls: type) -> type:
    """Class decorator: register a lock under its own `name` (written once, on the class)."""
    LOCKS.add(cls.name, cls)
    return cls
