"""Reference attackers: what an attacker uses instead of the released model, on the same training data.

A lock protects something only where the released model gives an attacker more than their best alternative:
`uplift = (best attack on the released weights) - (best reference attacker)`, at the same data (and, for
trained references, step) budget. The scratch reference (the architecture re-initialized, trained by every
optimizer and rate the attack side used) runs inside the red-team suite as matched pairs; the others run here.

A reference is one file, registered once:

    @register_reference("classical")
    @dataclass
    class Classical:
        '''TF-IDF + logistic regression on text; logistic regression on pixels for images.'''
        def __call__(self, target: ReferenceTarget) -> list[ReferenceRun]: ...

It returns one `ReferenceRun` per setting it tried (their best is what the reports use), and never raises for a
task it cannot fit: it returns a run with `error` set, which reports show as a row, never as a silent
best-of-the-rest.

A reference that takes one argument names the option it goes to (`argument = "model"`, a ClassVar); the
name `NAME:ARG` (split at the first ':') looks it up with that option set, e.g. `alternative:effnet-lite1`
is `Alternative(model="effnet-lite1")` and `alternative:hf:/models/bert` is `Alternative(model="hf:/models/bert")`.
`check_reference(name)` raises a one-line ValueError for a name that cannot run (commands call it before any
work).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch.nn as nn

from ...registry import Registry, UnknownNameError
from ...tasks import Task, TextTask


@dataclass
class ReferenceTarget:
    """What a reference attacker gets: the attacker's training data and test split (the red team's task), the
    raw texts of a text task (`text`, for classical text models), the released model (a scratch or probe
    reference reads its architecture or features, never its held-back-task answers), and the budget."""

    task: Task  # tensors as the released model reads them (tokens for text)
    model: nn.Module | None = None
    text: TextTask | None = None
    steps: int | None = None  # the attack side's optimizer steps per run (trained references match it)
    seed: int = 0


@dataclass
class ReferenceRun:
    """One setting a reference attacker tried: its name, test accuracy, wall time, and why it failed (if it did)."""

    attacker: str  # e.g. "classical:tfidf+lr(C=10)"
    accuracy: float | None = None
    wall_s: float = 0.0
    n_train: int | None = None
    error: str | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Reference(Protocol):
    """A reference attacker: called on a target, it returns the runs it made (best first or in any order)."""

    def __call__(self, target: ReferenceTarget) -> list[ReferenceRun]: ...


def split_reference(name: str) -> tuple[str, str | None]:
    """("alternative", "effnet-lite1") from "alternative:effnet-lite1" (split at the first ':'); (name, None)."""
    head, sep, arg = str(name).partition(":")
    return head, (arg if sep else None)


class ReferenceRegistry(Registry):
    """The reference registry: a lookup of `NAME:ARG` gives NAME's factory with ARG bound to its `argument`."""

    def get(self, name: str):
        head, arg = split_reference(name)
        factory = super().get(head)
        if arg is None:
            return factory
        key = getattr(factory, "argument", None)
        if key is None:
            raise ValueError(f"reference attacker {head!r} takes no argument, got {name!r} (write {head!r})")
        return functools.partial(factory, **{key: arg})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(split_reference(name)[0])

    def origin(self, name: str) -> str | None:
        return super().origin(split_reference(name)[0])


REFERENCES: Registry[Callable[..., Reference]] = ReferenceRegistry("reference attacker")


def register_reference(name: str) -> Callable[[type], type]:
    """Class decorator: register a reference attacker (a dataclass of its options, called on a target)."""
    return REFERENCES.register(name)


def check_reference(name: str) -> None:
    """Raise a one-line ValueError when reference `name` cannot run: an unknown reference, an argument it does
    not take, or one its options refuse (e.g. `alternative:` with an unknown model or an hf:DIR without
    config.json). Builds the reference's options only: no model, no data."""
    try:
        REFERENCES.get(name)()
    except UnknownNameError as e:
        raise ValueError(str(e)) from None
    except TypeError as e:  # a required option the name does not give
        raise ValueError(f"reference attacker {name!r}: {e}") from None


def run_reference(name: str, target: ReferenceTarget, **options) -> list[ReferenceRun]:
    """Run reference `name` (`NAME:ARG` sets NAME's argument, see the module); an exception becomes one run with
    its error (reports show it as a row)."""
    t0 = time.perf_counter()
    try:
        runs = list(REFERENCES.get(name)(**options)(target))
    except Exception as e:  # a reference that cannot fit a task is a row with its error, not a crash
        return [ReferenceRun(attacker=name, error=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - t0)]
    return runs or [ReferenceRun(attacker=name, error="no run", wall_s=time.perf_counter() - t0)]


def best_reference(runs: list[ReferenceRun | dict]) -> dict | None:
    """{"accuracy", "attacker"} of the best finished run, None when none finished."""
    done = [r if isinstance(r, dict) else r.to_dict() for r in runs]
    done = [r for r in done if r.get("accuracy") is not None and not r.get("error")]
    if not done:
        return None
    top = max(done, key=lambda r: (r["accuracy"], r["attacker"]))
    return {"accuracy": top["accuracy"], "attacker": top["attacker"]}


__all__ = [
    "REFERENCES",
    "Reference",
    "ReferenceRun",
    "ReferenceTarget",
    "best_reference",
    "check_reference",
    "register_reference",
    "run_reference",
    "split_reference",
]
