"""`RunRow`: what one attack run gives, the schema of every red-team row (checked when written and when read).

A row is one line of a results file (`runs.jsonl`, JSON with sorted keys) and one entry of
`redteam(...)["runs"]`, always in the `to_dict()` form: the fields of ALWAYS are always there, any other field
only when it was measured (not None; `extra` only when not empty). A stage's own numbers go to `extra` (a
JSON-ready dict), so a plugin needs no change here; a field that a built-in stage writes is declared below.
Reading and writing results files: `trainlock.red_team.row`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol, Union


class RowSpec(Protocol):
    """What a row reads from the spec of its run (`trainlock.red_team.AttackSpec`)."""

    transforms: tuple
    seed: int
    name: str
    insider: bool

    def key(self) -> str: ...

    def to_dict(self) -> dict: ...


ALWAYS = ("key", "attack", "config", "seed", "adaptive", "insider", "skipped", "diverged", "notes")


class RowError(ValueError):
    """A row that does not fit the schema (the message names the file and line when read from one)."""


@dataclass
class RunRow:
    """One run's result. `error` rows (the run raised) and `skipped` rows (a stage does not apply) carry no
    accuracy; every completed run has accuracy, curve, evals, steps, steps_to_target, wall_s and cost_steps."""

    key: str  # the spec's key (the resume identity)
    attack: str  # the spec's readable name, e.g. "rescale+adam@0.001", "scratch:sgd@0.01"
    config: dict  # the spec as a dict (AttackSpec.to_dict)
    seed: int
    adaptive: bool = False  # the run applied weight-space transforms
    insider: bool = False  # a transform read the lock's private record
    skipped: str | None = None  # why the run did not apply (nothing was trained)
    diverged: str | None = None  # why training stopped early (a non-finite loss), if it did
    notes: list[str] = field(default_factory=list)  # one per transform applied
    error: str | None = None  # the exception the run raised
    traceback: str | None = None
    accuracy: float | None = None  # final test accuracy on the attack task (after the fold)
    accuracy_before_fold: float | None = None
    curve: list[float] | None = None  # test accuracy after each epoch
    evals: list[list] | None = None  # [step, accuracy on the eval samples] every eval_every steps
    steps_to_target: int | None = None  # first checked step at target accuracy (None: not reached)
    steps: int | None = None  # training steps run
    wall_s: float | None = None
    cost_steps: int | None = None  # every optimizer step the run spent (distillation included)
    authorized_after_transform: float | None = None  # authorized task's accuracy before training
    authorized_after_attack: float | None = None
    lock_first_broken: dict | None = None  # {"lock: invariant": first checked step it broke}; plain runs
    certificates_after: dict | None = None  # {"lock: invariant": holds} on the final model
    backdoor_before: dict | None = None  # {"clean_accuracy", "clean_f1", "asr"}
    backdoor_after: dict | None = None
    distill: dict | None = None  # the distillation's numbers (steps, KL, agreement, ...)
    search: bool | None = None  # an Optuna search trial
    trial: int | None = None  # its number in the study
    extra: dict = field(default_factory=dict)  # a stage's own numbers (plugins)

    @classmethod
    def of(cls, spec: RowSpec, **fields: Any) -> RunRow:
        """A row for `spec`, identity fields filled from it."""
        return cls(
            key=spec.key(),
            attack=spec.name,
            config=spec.to_dict(),
            seed=spec.seed,
            adaptive=bool(spec.transforms),
            insider=spec.insider,
            **fields,
        )

    @classmethod
    def failure(cls, spec: RowSpec, error: str, traceback: str | None = None) -> RunRow:
        """The row of a run that raised (or whose worker died): the sweep goes on and the report lists it."""
        return cls.of(spec, error=error, traceback=traceback)

    def to_dict(self) -> dict:
        """The JSON-ready row (checked): ALWAYS fields, then the others that are set."""
        self.check()
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ALWAYS or (v is not None and (v or f.name != "extra")):
                out[f.name] = v
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: Any, where: str = "row") -> RunRow:
        """A row from its dict; RowError (naming `where`) for a non-dict, a missing or unknown key, a wrong type."""
        if not isinstance(data, dict):
            raise RowError(f"{where}: a row is a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise RowError(f"{where}: unknown field(s) {unknown}; valid: {names} (a stage's own numbers go to 'extra')")
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
        ]
        if missing:
            raise RowError(f"{where}: missing field(s) {missing}")
        row = cls(**data)
        row.check(where)
        return row

    def check(self, where: str = "row") -> None:
        """RowError unless every field has its declared type (JSON numbers: an int is a float too)."""
        for name, hint in _hints().items():
            v = getattr(self, name)
            if not _fits(v, hint):
                raise RowError(f"{where}: field {name!r} must be {_show(hint)}, got {type(v).__name__} {v!r:.80}")


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RunRow)


def _fits(v: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(v, a) for a in args)
    if hint is type(None):
        return v is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return isinstance(v, str)
    if (origin or hint) is list:
        return isinstance(v, list) and (not args or all(_fits(x, args[0]) for x in v))
    if (origin or hint) is dict:
        return isinstance(v, dict) and all(isinstance(k, str) for k in v)
    raise TypeError(f"RunRow: no check for type {hint!r}")


def _show(hint: Any) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")
