"""The lock interface and its certificate.

A lock turns a model into a locked model (`apply`) and measures, from the weights alone, the
invariant it claims (`certify`). Its certificate says what is claimed, the measured and required
values, why the invariant blocks the bad region (proof of gap), why training keeps it
(preservation), and the threat model: a release-time lock against an adversary who holds the
weights (SpecDef), or a training-time constraint that protects one's own training run (frozen
layers, spectral caps, sparsity), which an adversary holding the weights can simply remove.

A lock is one class per file, registered once with its config class:

    @register_lock("noisy-top", NoisyTopConfig)
    class NoisyTopLock(BaseLock):
        record_cls = NoisyTopRecord                      # what apply measured, needed to certify (or NoRecord)
        def apply(self, model, retain=None, *, progress=False, checkpoint=None) -> Locked: ...
        def certify(self, model, record) -> list[Certificate]: ...

Configs hold settings only; what `apply` measured travels in the returned record (a dataclass), never in
the config, on the lock or on the model. `trainlock.lock` stores `{"type", "config", "record"}` (and the
plugin that defines the lock, when one does) in the model directory, and `lock_from_meta` rebuilds a
`RecordedLock` (lock + record) that `certify(model)` alone.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch.nn as nn

from .. import tasks as _tasks
from ..config import from_dict, option, to_dict
from ..registry import Registry
from ..tasks import Task
from ..train import Checkpoint, LoopResult, evaluate

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
    def from_dict(cls, data: dict) -> Certificate:
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


@dataclass
class NoRecord:
    """The record of a lock whose certificate needs nothing measured at lock time."""


@dataclass
class Locked:
    """What `apply` returns: the locked copy, what it measured (the lock's `record_cls`), the run report of a
    lock that trains (else None)."""

    model: nn.Module
    record: Any
    report: LockReport | None = None


@runtime_checkable
class Lock(Protocol):
    """A lock: everything the factory, `trainlock.lock` and the verifier call.

    `apply` returns a `Locked` (a copy; the input is not modified); `certify(model, record)` measures the
    claim from the weights and the record `apply` returned. `from_config(config_dict)` and `config()`
    round-trip the settings; `record_from_dict` / `record_to_dict` the record.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    record_cls: ClassVar[type]

    @classmethod
    def from_config(cls, data: dict) -> Lock: ...

    def config(self) -> dict: ...

    def apply(
        self,
        model: nn.Module,
        retain: Task | None = None,
        *,
        progress: bool = False,
        checkpoint: Checkpoint | None = None,
    ) -> Locked: ...

    def certify(self, model: nn.Module, record: Any) -> list[Certificate]: ...

    def use_tasks(self, *tasks: Task) -> Lock: ...


class BaseLock:
    """A lock held by one config dataclass (`config_cls`, set by `register_lock`): the constructor,
    `from_config`, `config`, the record's (de)serialization and `use_tasks`, which every lock would
    otherwise write again. `self.cfg` is a private copy of the config and is never written after __init__."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    record_cls: ClassVar[type] = NoRecord
    example: ClassVar[dict | None] = None

    def __init__(self, config=None):
        self.cfg = dataclasses.replace(config) if config is not None else self.config_cls()

    @classmethod
    def from_config(cls, data: dict):
        return cls(from_dict(cls.config_cls, dict(data)))

    def config(self) -> dict:
        return to_dict(self.cfg)

    def record_to_dict(self, record: Any) -> dict:
        if not isinstance(record, self.record_cls):
            raise TypeError(f"{self.name}: expected a {self.record_cls.__name__} record, got {type(record).__name__}")
        return to_dict(record)

    def record_from_dict(self, data: dict | None) -> Any:
        return from_dict(self.record_cls, dict(data or {}))

    def use_tasks(self, *tasks: Task):
        return self


class TaskLock(BaseLock):
    """A lock whose config names tasks besides the retain task (a restricted domain, a bad task): Task
    objects handed over with `use_tasks` (derived tasks that have no registry name) are used first, then the
    task registry."""

    def __init__(self, config=None, tasks: dict[str, Task] | None = None):
        super().__init__(config)
        self._tasks: dict[str, Task] = dict(tasks or {})

    def use_tasks(self, *tasks: Task) -> TaskLock:
        for t in tasks:
            self._tasks[t.name] = t
        return self

    def task(self, name: str) -> Task:
        """The task called `name`: a handed-over one, else loaded from the registry (once)."""
        if name not in self._tasks:
            self._tasks[name] = _tasks.get(name)
        return self._tasks[name]


def trained(
    model: nn.Module, locked: nn.Module, retain: Task, config: Any, run: Callable[[], LoopResult]
) -> LockReport:
    """The run report of a lock that trains: `run()` trains `locked` (a copy of `model`); accuracy on the
    retain task before and after, the per-epoch history, steps, wall time of the loop and why it stopped."""
    report = LockReport(locked, to_dict(config) if dataclasses.is_dataclass(config) else dict(config))
    report.accuracy_before = evaluate(model, retain)
    t0 = time.perf_counter()
    result = run()
    report.loop_s = time.perf_counter() - t0
    report.steps, report.history, report.stopped = result.steps, result.epochs, result.stopped
    last = result.epochs[-1] if result.epochs else {}
    if last.get("step") == result.steps and isinstance(last.get("retain_accuracy"), float):
        report.accuracy_after = last["retain_accuracy"]  # the last epoch's hook measured these very weights
    else:
        report.accuracy_after = evaluate(locked, retain)
    return report


@dataclass
class RecordedLock:
    """A lock bound to the record its `apply` returned: what a saved model directory holds, certifiable from
    the weights alone (`certify(model)`), as the verifier, the red team and the lock monitor need."""

    lock: Lock
    record: Any

    @property
    def name(self) -> str:
        return self.lock.name

    def certify(self, model: nn.Module) -> list[Certificate]:
        return self.lock.certify(model, self.record)

    def entry(self) -> dict:
        """The `meta["locks"]` entry: type, config, record, and the plugin that defines the lock (if any)."""
        out = {"type": self.lock.name, "config": self.lock.config(), "record": self.lock.record_to_dict(self.record)}
        plugins = list(dict.fromkeys(p for p in map(LOCKS.origin, _lock_names(self.lock)) if p))
        if plugins:
            out["plugin"] = plugins[0] if len(plugins) == 1 else plugins
        private = private_paths(self.lock)
        if private:
            out["private"] = private  # `trainlock release` drops these config fields from the public copy
        return out


def _lock_names(lock) -> list[str]:
    """The lock's registered name and those of its children (a composite), depth first."""
    return [lock.name, *(n for c in getattr(lock, "children", ()) for n in _lock_names(c))]


LOCKS: Registry[type] = Registry("lock")


def register_lock(name: str, config_cls: type, *, example: dict | None = None) -> Callable[[type], type]:
    """Class decorator: register a lock class under `name` with its config dataclass (both set on the class).

    `example`: a config dict that works on a tiny classifier (the contract test's: a small transformer on
    8x8 digits, retain task `digits`, another task `digits-permuted-1` handed over), so the shared tests run
    every registered lock; the contract test fails for a lock without one."""
    if not isinstance(name, str) or not dataclasses.is_dataclass(config_cls):
        raise TypeError("use @register_lock(NAME, ConfigDataclass) above the lock class")

    def deco(cls: type) -> type:
        for attr in ("apply", "certify"):
            if not callable(getattr(cls, attr, None)):
                raise TypeError(f"lock {name!r}: {cls.__name__} has no {attr}() method")
        record_cls = getattr(cls, "record_cls", NoRecord)
        if not dataclasses.is_dataclass(record_cls):
            raise TypeError(f"lock {name!r}: record_cls must be a dataclass, got {record_cls!r}")
        LOCKS.add(name, cls)  # first: a name registered already raises before the class is touched
        cls.name, cls.config_cls, cls.example = name, config_cls, example
        return cls

    return deco


SPACES: Registry[Callable] = Registry("search space")


def register_space(lock: str) -> Callable[[Callable], Callable]:
    """Decorator: the `tune` search space of lock `lock`, a function `space(trial, model, attack) -> config`
    that draws the lock's settings with Optuna's `trial.suggest_*` (`attack` is the tuning task)."""
    return SPACES.register(lock)


def private_fields(config_cls: type) -> set[str]:
    """Names of the config's fields marked `option(..., private=True)`: kept out of a public release."""
    if not dataclasses.is_dataclass(config_cls):
        return set()
    return {f.name for f in dataclasses.fields(config_cls) if f.metadata.get("private")}


def private_paths(lock) -> list[str]:
    """The lock's private config fields as dotted paths into its `config()`: a field's name, and for a
    composite's i-th child `locks.<i>.<path>` (depth first), so a child's private field stays out of a release
    too."""
    own = sorted(private_fields(type(getattr(lock, "cfg", None))))
    return own + [f"locks.{i}.{p}" for i, c in enumerate(getattr(lock, "children", ())) for p in private_paths(c)]


__all__ = [
    "LOCKS",
    "SPACES",
    "BaseLock",
    "Certificate",
    "Lock",
    "LockReport",
    "Locked",
    "NoRecord",
    "RecordedLock",
    "TaskLock",
    "option",
    "private_fields",
    "register_lock",
    "register_space",
    "trained",
]
