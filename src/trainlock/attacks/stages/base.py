"""Attack stages: one red-team run is a chain of typed stages, one per kind, each registered once by name.

    kind        what it does                                   built in
    start       where the attacker's weights come from        released, scratch, distill
    transforms  weight-space transforms, applied in order      the TRANSFORMS registry (attacks/transforms)
    data        what the attacker trains on                    clean, backdoor
    train       how the weights are trained                    finetune, lora
    fold        back to the released architecture              reverse

An `AttackSpec` (trainlock.red_team.spec) names one stage of each kind (`start="scratch"`, `data="backdoor"`,
`train="finetune"`, `fold="reverse"`, plus its `transforms`) and their options by stage name
(`options={"distill": {"steps": 200}}`). `run_spec` builds them and runs `chain(start, transforms, data, train,
fold)` over one `AttackState`, then scores the final model (accuracy, authorized accuracy, certificates).

A stage is made by its registered factory from its options (a dataclass whose fields are the options, or any
callable taking them as keywords) and called with the state, which it updates in place. A plugin adds one with
one decorator (then `AttackSpec(start="noisy")`, or `--plugin noisy.py` on the command line):

    @register_stage("start", "noisy", example={"start": "noisy", "options": {"noisy": {"scale": 0.05}}})
    @dataclass
    class Noisy:
        '''The released weights plus Gaussian noise.'''

        scale: float = option(0.01, "noise std")
        fresh: ClassVar[bool] = False  # the released weights are kept: transforms apply, locks are watched

        def __call__(self, state: AttackState) -> None:
            state.model = clone_model(state.released)
            ...

A stage may also define `check(state) -> str | None`: a reason it cannot run, asked of every stage before any
of them runs (the run is then recorded as skipped, nothing computed). Raising `StageNotApplicable` inside a
stage skips the run the same way. What a stage measures goes to the row's declared fields (`RunRow`) or, for a
plugin's own numbers, to `state.row.extra` (a JSON-ready dict saved with the row).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch.nn as nn

from ...registry import Registry, UnknownNameError
from ...tasks import Task, TextTask, for_model
from ...train import LoopConfig
from ..finetune import AttackResult, FineTuneConfig
from ..transforms import TRANSFORMS
from .row import RunRow

KINDS = ("start", "transforms", "data", "train", "fold")
STAGES: dict[str, Registry] = {
    "start": Registry("start stage"),
    "transforms": TRANSFORMS,  # a transform factory takes its options and returns a `Transform`
    "data": Registry("data stage"),
    "train": Registry("train stage"),
    "fold": Registry("fold stage"),
}
_EXAMPLES: dict[tuple[str, str], dict] = {}
F = TypeVar("F", bound=Callable)


class RunSpec(Protocol):
    """What stages read from the spec of their run (`trainlock.red_team.AttackSpec`)."""

    transforms: tuple[tuple[str, dict], ...]  # ((name, {options}), ...)
    finetune: FineTuneConfig  # the loop and what training measures
    seed: int
    loop: LoopConfig

    def finetune_config(self, device: str) -> FineTuneConfig: ...


class StageNotApplicable(Exception):
    """Raised inside a stage to skip the run with a reason (the row records it as `skipped`)."""


@dataclass
class AttackState:
    """What one run's stages share, in the order they use it: start sets `model` from `released`; the transforms
    replace it and add `folds`; data sets `train_task` (and may add measurements of the final model to `after`);
    train replaces `model` with the trained one and sets `result`; fold maps `model` back through `folds`."""

    released: nn.Module  # the model under attack; never modified
    task: Task  # the attack task as the released model reads it (tokens for a text model)
    spec: RunSpec  # the run's settings: spec.finetune (loop, head, target accuracy), spec.seed, ...
    row: RunRow  # the row being filled
    retain: Task | None = None  # the authorized task: its accuracy after the transforms and after the attack
    text: TextTask | None = None  # the attack task's text before tokenization (the backdoor's prefix trigger)
    device: str = "cpu"
    locks: list | None = None  # the model's recorded locks (meta["locks"]): watched and re-certified
    lock_summary: dict | None = None  # the model's lock summary (meta["lock"]): what insider transforms read
    model: nn.Module | None = None
    train_task: Task | None = None
    folds: list[Callable[[nn.Module], nn.Module] | None] = field(default_factory=list)
    result: AttackResult | None = None
    after: list[Callable[[AttackState], None]] = field(default_factory=list)  # run on the final model, in order
    scored: bool = False  # the train stage scored the row and left the weights alone (the probe): nothing to re-run

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def finetune(self) -> FineTuneConfig:
        """The spec's fine-tuning config on this run's device."""
        return self.spec.finetune_config(self.device)

    @property
    def tokens(self) -> bool:
        """The attack task is tokenized text."""
        return not self.task.x_train.is_floating_point()

    def adapted(self, task: Task | None) -> Task | None:
        """`task` as the current model (the released one before `start`) reads it."""
        return None if task is None else for_model(task, self.released if self.model is None else self.model)

    def spend(self, steps: int) -> None:
        """Count `steps` optimizer steps in the run's cost (distillation and training both count)."""
        self.row.cost_steps = (self.row.cost_steps or 0) + int(steps)

    def trained(self, res: AttackResult) -> None:
        """Take a training run: its model becomes the state's, its numbers go to the row."""
        self.model, self.result = res.model, res
        row = self.row
        row.accuracy_before_fold, row.curve, row.evals = res.accuracy, list(res.curve), [list(e) for e in res.evals]
        row.steps_to_target, row.steps, row.diverged = res.steps_to_target, res.steps, res.diverged
        self.spend(res.steps)

    def monitor(self):
        """A LockMonitor over the recorded locks for a plain run (None without locks or after a transform)."""
        if not self.locks or self.spec.transforms:
            return None
        from ...certify.monitor import LockMonitor
        from ...locks.factory import lock_from_meta

        return LockMonitor(lock_from_meta(self.locks), every=self.spec.finetune.eval_every)


@runtime_checkable
class StartStage(Protocol):
    """Sets `state.model`: the attacker's starting weights. An optional class attribute `authorized = False` says
    the start holds nothing of the released model (random weights): the run then skips the two evaluations on
    the authorized task, whose numbers would only measure chance."""

    fresh: bool  # True: not the released weights (no transform applies; the recorded locks are not watched)

    def __call__(self, state: AttackState) -> None: ...


@runtime_checkable
class DataStage(Protocol):
    """Sets `state.train_task`: what the attacker trains on (may append measurements to `state.after`)."""

    def __call__(self, state: AttackState) -> None: ...


@runtime_checkable
class TrainStage(Protocol):
    """Trains `state.model` on `state.train_task`; hands the result to `state.trained(result)`."""

    def __call__(self, state: AttackState) -> None: ...


@runtime_checkable
class FoldStage(Protocol):
    """Maps the trained `state.model` back through `state.folds`."""

    def __call__(self, state: AttackState) -> None: ...


PROTOCOLS: dict[str, type] = {"start": StartStage, "data": DataStage, "train": TrainStage, "fold": FoldStage}


class Chain:
    """Stages run in order as one (optax's `chain`): `check` asks each for a reason not to run, then `__call__`
    runs each on the same state."""

    def __init__(self, *stages: Callable[[AttackState], None]):
        self.stages = stages

    def check(self, state: AttackState) -> str | None:
        for stage in self.stages:
            check = getattr(stage, "check", None)
            reason = check(state) if check is not None else None
            if reason:
                return reason
        return None

    def __call__(self, state: AttackState) -> None:
        for stage in self.stages:
            stage(state)


def chain(*stages: Callable[[AttackState], None]) -> Chain:
    return Chain(*stages)


def _registry(kind: str) -> Registry:
    if kind not in STAGES:
        raise ValueError(f"unknown stage kind {kind!r}; valid: {', '.join(KINDS)}")
    return STAGES[kind]


def default_example(kind: str, name: str) -> dict:
    """The spec that uses stage `name` of `kind` with its default options (every other stage the default)."""
    return {"transforms": [[name, {}]]} if kind == "transforms" else {kind: name}


def register_stage(kind: str, name: str, *, example: dict | None = None) -> Callable[[F], F]:
    """Decorator: register the factory of a `kind` stage (one of KINDS) under `name`.

    `example`: AttackSpec fields (nested, or the flat form) of a run that uses the stage on a tiny classifier
    (an MLP on 8x8 digits, attacked on permuted digits with a handful of steps); the contract test runs every
    registered stage's example. Default: the stage with its default options."""
    registry = _registry(kind)

    def deco(factory: F) -> F:
        if not callable(factory):
            raise TypeError(f"{kind} stage {name!r}: register a class or function, got {factory!r}")
        registry.add(name, factory)
        _EXAMPLES[kind, name] = dict(example) if example is not None else default_example(kind, name)
        return factory

    return deco


def example(kind: str, name: str) -> dict:
    """The example spec fields registered with a stage (a transform registered without one: its defaults)."""
    _registry(kind).get(name)
    return dict(_EXAMPLES.get((kind, name)) or default_example(kind, name))


def registered() -> list[tuple[str, str]]:
    """(kind, name) of every registered stage, transforms included."""
    return [(kind, name) for kind in KINDS for name in STAGES[kind].names()]


def stage_names(kind: str) -> list[str]:
    return _registry(kind).names()


def build_stage(kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
    """The `kind` stage `name` made with `options`; a clear ValueError for an unknown name or option."""
    registry = _registry(kind)
    try:
        factory = registry.get(name)
    except UnknownNameError:
        raise ValueError(
            f"unknown {kind} stage {name!r}; valid: {', '.join(registry.names()) or '(none)'}. A stage "
            f"defined in a plugin: load the plugin that defines it with --plugin PATH.py|MODULE (or "
            f"TRAINLOCK_PLUGINS)"
        ) from None
    try:
        stage = factory(**(options or {}))
    except TypeError as e:
        valid = [f.name for f in dataclasses.fields(factory)] if dataclasses.is_dataclass(factory) else None
        raise ValueError(
            f"{kind} stage {name!r}: bad options {options}: {e}" + ("" if valid is None else f"; valid: {valid}")
        ) from None
    proto = PROTOCOLS.get(kind)
    if proto is not None and not isinstance(stage, proto):
        raise TypeError(
            f"{kind} stage {name!r}: {type(stage).__name__} does not follow {proto.__name__} "
            f"(see trainlock.attacks.stages.base)"
        )
    return stage


def stage_defaults(kind: str, name: str) -> dict[str, Any]:
    """{option: default} of a dataclass stage ({} for another factory or an unknown name): options equal to
    these are left out of a spec."""
    registry = _registry(kind)
    factory = registry.get(name) if name in registry else None
    if not dataclasses.is_dataclass(factory):
        return {}
    out = {}
    for f in dataclasses.fields(factory):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
