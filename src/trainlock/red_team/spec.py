"""One red-team run as data: a stage of each kind by name, the transforms, the fine-tuning config. JSON round-trip.

    AttackSpec.of("sgd", 0.01, max_steps=200)                          # flat settings go where they belong
    AttackSpec(start="distill", finetune=FineTuneConfig(loop=LoopConfig(optimizer="adam", lr=1e-3)),
               options={"distill": {"steps": 200}})

Keys (the resume identity of a run, `key()`): version 2 is the first 16 hex digits of the SHA-256 of the sorted
JSON of {"v": 2, **to_dict()}, the loop's device left out (where a run executes is not what it is). Version 1
(trainlock <= 0.2: flat configs, no version marker, fields added after 0.2.0 left out at their defaults) is
`legacy_key()`. Reading a results directory re-keys each row whose key is its own config's (`row.migrate`): a
version-1 row, or one whose config lacks a field added since, resumes without running again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..attacks import FineTuneConfig
from ..attacks.references import check_reference
from ..attacks.stages import KINDS, Transforms, build_stage, stage_defaults
from ..attacks.transforms import TRANSFORMS
from ..config import check_float, check_int, option, to_dict
from ..config import from_dict as config_from_dict
from ..optimizers import OPTIMIZERS
from ..train import LoopConfig
from .backends import RunnerConfig

KEY_VERSION = 2
_LOOP_FIELDS = {f.name for f in dataclasses.fields(LoopConfig)}
_FINETUNE_FIELDS = {f.name for f in dataclasses.fields(FineTuneConfig)} - {"loop"}
# version 1 (flat) fields: where each lives now
_V1_LOOP = ("optimizer", "lr", "epochs", "max_steps", "batch_size", "lr_gamma", "schedule", "seed")
_V1_FINETUNE = ("head", "target_accuracy", "eval_every")
_V1_OPTIONS = {"distill_steps": ("distill", "steps", 500), "poison_fraction": ("backdoor", "poison_fraction", 0.1)}
_V1_LEFT_OUT = {"schedule": "step", "init": "released", "distill_steps": 500, "poison_fraction": 0.1}


class Stages(NamedTuple):
    start: Any
    transforms: Transforms
    data: Any
    train: Any
    fold: Any


def _sha16(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_key(config: dict) -> str:
    """The version-2 key of a spec's dict (`AttackSpec.to_dict()`)."""
    d = json.loads(json.dumps(config))
    d.get("finetune", {}).pop("epoch_curve", None)  # what is recorded along the way, not what the run does
    loop = d.get("finetune", {}).get("loop", {})
    loop.pop("device", None)
    if loop.get("precision") == "fp32":  # the default, and what every run before the option was: same keys
        loop.pop("precision")
    return _sha16({"v": KEY_VERSION, **d})


@dataclass
class AttackSpec:
    """A composable attack: start -> transforms -> data -> train -> fold, each stage named (see
    trainlock.attacks.stages; a plugin's stages by their names once the plugin is loaded)."""

    start: str = option(
        "released",
        "where the weights come from: a start stage (released, scratch: the "
        "architecture re-initialized, distill: a fresh student of the released model)",
    )
    transforms: tuple[tuple[str, dict], ...] = option(
        factory=tuple,
        help="((name, {options}), ...) weight-space transforms (TRANSFORMS) applied in order before "
        "training; only on the released weights",
    )
    data: str = option(
        "clean",
        "what is trained on: a data stage (clean; backdoor: a poisoned training split, attack success rate reported)",
    )
    train: str = option("finetune", "how the weights are trained: a train stage (finetune; lora: adapters)")
    fold: str = option("reverse", "after training: a fold stage (reverse: the transforms' folds, last first)")
    finetune: FineTuneConfig = option(
        factory=FineTuneConfig,
        help="the training loop (optimizer, lr, epochs, steps, batch, schedule, seed) and "
        "what is measured (head, target accuracy, eval_every); the device is the "
        "runner's",
    )
    options: dict[str, dict] = option(
        factory=dict,
        help="the named stages' options by stage name, e.g. {'distill': {'steps': 200}}; options at "
        "a stage's defaults are left out, so equal runs have equal keys",
    )

    def __post_init__(self):
        self.transforms = tuple((str(n), dict(o)) for n, o in self.transforms)
        if not isinstance(self.finetune, FineTuneConfig):
            raise ValueError(f"AttackSpec: finetune must be a FineTuneConfig, got {type(self.finetune).__name__}")
        for kind in ("start", "data", "train", "fold"):
            if not isinstance(getattr(self, kind), str):
                raise ValueError(f"AttackSpec: {kind} must be a stage name, got {getattr(self, kind)!r}")
        self.options = self._normalized(self.options)
        stages = self.stages()  # an unknown stage or option fails here, not in a worker
        for name, opts in self.transforms:
            build_stage("transforms", name, opts)
        if self.transforms and stages.start.fresh:
            raise ValueError(f"start={self.start!r} starts from fresh weights: weight-space transforms do not apply")

    def _kinds(self) -> dict[str, str]:
        """{stage name: kind} of this spec's named stages."""
        return {getattr(self, kind): kind for kind in reversed(KINDS) if kind != "transforms"}

    def _normalized(self, options: dict) -> dict[str, dict]:
        kinds, out = self._kinds(), {}
        for name, opts in dict(options or {}).items():
            if name not in kinds:
                used = ", ".join(f"{k}={getattr(self, k)!r}" for k in KINDS if k != "transforms")
                raise ValueError(f"options for {name!r}: not a stage of this spec ({used})")
            if not isinstance(opts, dict):
                raise ValueError(f"options for {name!r} must be a dict, got {opts!r}")
            defaults = stage_defaults(kinds[name], name)
            kept = {k: v for k, v in opts.items() if not (k in defaults and defaults[k] == v)}
            if kept:
                out[str(name)] = kept
        return out

    def stages(self) -> Stages:
        """The stages this spec names, made with their options (a ValueError names an unknown one)."""

        def make(kind: str):
            name = getattr(self, kind)
            return build_stage(kind, name, self.options.get(name))

        return Stages(make("start"), Transforms(self.transforms), make("data"), make("train"), make("fold"))

    @property
    def loop(self) -> LoopConfig:
        return self.finetune.loop

    @property
    def seed(self) -> int:
        return self.finetune.loop.seed

    @property
    def name(self) -> str:
        """Readable name: transforms, then optimizer and lr, e.g. 'rescale+adam@0.001', 'scratch:sgd@0.01'."""
        parts = [
            n + ("" if not o else "(" + ",".join(f"{k}={v}" for k, v in sorted(o.items())) + ")")
            for n, o in self.transforms
        ]
        extra = "" if self.finetune.head == "auto" else f"[head={self.finetune.head}]"
        extra += "" if self.data == "clean" else f"[{self.data}]"
        extra += "" if self.train == "finetune" else f"[{self.train}]"
        extra += "" if self.fold == "reverse" else f"[fold={self.fold}]"
        pre = "" if self.start == "released" else f"{self.start}:"
        return pre + "+".join([*parts, f"{self.loop.optimizer}@{self.loop.lr:g}"]) + extra

    @property
    def insider(self) -> bool:
        """Reads the lock's private record (e.g. sv-clip with use_record): not what a real attacker has."""
        return any(o.get("use_record") for _, o in self.transforms)

    def key(self) -> str:
        """The resume identity (version 2, see the module docstring)."""
        return config_key(self.to_dict())

    def legacy_key(self) -> str | None:
        """The key version 1 gave this spec; None for a spec version 1 could not express."""
        flat = self._v1_flat()
        if flat is None:
            return None
        return _sha16({k: v for k, v in flat.items() if not (k in _V1_LEFT_OUT and v == _V1_LEFT_OUT[k])})

    def _v1_flat(self) -> dict | None:
        flat: dict[str, Any] = {k: getattr(self.loop, k) for k in _V1_LOOP}
        flat.update({k: getattr(self.finetune, k) for k in _V1_FINETUNE})
        flat.update(transforms=[[n, o] for n, o in self.transforms], init=self.start, data=self.data)
        for old, (stage, opt, default) in _V1_OPTIONS.items():
            flat[old] = self.options.get(stage, {}).get(opt, default)
        flat = json.loads(json.dumps(flat))
        try:
            same = AttackSpec.from_dict(flat).key() == self.key()
        except ValueError:
            return None
        return flat if same else None

    @staticmethod
    def is_flat(data: dict) -> bool:
        """A version-1 dict: the loop's and fine-tuning's fields beside the others, no `finetune`."""
        return "finetune" not in data

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AttackSpec:
        """From `to_dict()`'s form or a version-1 flat dict (a loop or fine-tuning field at the top goes into
        `finetune`, `init` is `start`, `distill_steps` and `poison_fraction` are their stages' options)."""
        if not isinstance(data, dict):
            raise ValueError(f"AttackSpec: expected a dict of fields, got {type(data).__name__}: {data!r}")
        data = dict(data)
        ft = data.pop("finetune", None) or {}
        ft = ft.to_dict() if isinstance(ft, FineTuneConfig) else dict(ft)
        loop = ft.pop("loop", None) or {}
        loop = loop.to_dict() if isinstance(loop, LoopConfig) else dict(loop)
        options = {k: dict(v) for k, v in (data.pop("options", None) or {}).items()}
        names = {f.name for f in dataclasses.fields(cls)}
        moved = {}
        for k in [k for k in data if k not in names]:
            v = data.pop(k)
            if k == "init":
                data.setdefault("start", v)
            elif k in _V1_OPTIONS:
                moved[k] = v
            elif k in _LOOP_FIELDS:
                loop[k] = v
            elif k in _FINETUNE_FIELDS:
                ft[k] = v
            else:
                data[k] = v  # unknown: named by from_dict below
        for k, v in moved.items():  # version-1 stage options, for the stage the spec uses
            stage, opt, default = _V1_OPTIONS[k]
            if v != default and stage in (data.get("start"), data.get("data")):
                options.setdefault(stage, {}).setdefault(opt, v)
        if loop:
            ft["loop"] = loop
        data.update(finetune=ft, options=options)
        return config_from_dict(cls, data)

    @classmethod
    def of(cls, optimizer: str = "adam", lr: float = 1e-3, **fields: Any) -> AttackSpec:
        """`AttackSpec.of("sgd", 0.01, max_steps=30, start="scratch")`: the optimizer and learning rate, then any
        field in the nested or the flat form (as `from_dict`)."""
        return cls.from_dict({"optimizer": optimizer, "lr": lr, **fields})

    def finetune_config(self, device: str = "cpu") -> FineTuneConfig:
        """The fine-tuning config on `device`."""
        return dataclasses.replace(self.finetune, loop=dataclasses.replace(self.finetune.loop, device=device))


@dataclass
class RedTeamConfig:
    """The suite and how to run it."""

    loop: LoopConfig = option(
        factory=lambda: LoopConfig(device="cpu"),
        help="epochs, step cap, batch size, seed and device of every run (the suite sets "
        "the optimizer and learning rate per run; on cuda runs go one at a time)",
    )
    budget: int | None = option(None, "at most this many runs, in the suite's priority order (default: all)")
    runner: RunnerConfig = option(factory=RunnerConfig, help="backend and workers", flat=True)
    target_accuracy: float = option(0.7, "accuracy that defines steps_to_target")
    epoch_curve: bool = option(
        False,
        "record every run's test accuracy after each epoch (an evaluation of the test split per epoch; the red "
        "team ranks runs by their final accuracy alone)",
    )
    search_trials: int = option(0, "Optuna trials after the suite (resumable)")
    storage: str | None = option(
        None,
        "Optuna storage of the search (default: SQLite in the results directory; "
        "any RDB URL, e.g. postgresql+psycopg://USER@HOST/DB, lets several machines "
        "share one study)",
    )
    include: tuple[str, ...] = option(
        factory=tuple, help="run only attacks whose name contains one of these (default: every attack)"
    )
    optimizers: tuple[str, ...] = option(
        factory=tuple, help="only these optimizers (default: every registered one)", choices=lambda: OPTIMIZERS.names()
    )
    transforms: tuple[str, ...] = option(
        factory=tuple, help="only these transforms (default: every registered one)", choices=lambda: TRANSFORMS.names()
    )
    lrs: tuple[float, ...] = option(
        factory=tuple,
        help="one learning-rate grid for every optimizer, e.g. 1e-8 1e-7 "
        "1e-6 1e-5 1e-4 1e-3 (paper Fig. 3; default: a grid per "
        "optimizer)",
    )
    references: tuple[str, ...] = option(
        ("classical",),
        help="reference attackers besides the suite's matched runs from scratch: what an attacker uses instead of "
        "the released model on the same data; uplift = best attack - best reference (a plugin may add one); "
        "alternative:MODEL is another public model fine-tuned and probed like the released one",
    )
    steps: tuple[int, ...] = option(
        factory=tuple,
        help="step budgets, one or more (e.g. 100 300 1000): the suite runs once per budget and seed, each run "
        "exactly that many optimizer steps (epochs raised to reach it), the attack and its references alike; the "
        "report leads with one row per budget and its headline is the worst case (default: the loop's max_steps)",
    )
    seeds: tuple[int, ...] = option(
        factory=tuple,
        help="seeds, one or more (e.g. 0 1 2): the suite runs once per seed and step budget; the report gives "
        "min / median / max over them (default: the loop's seed)",
    )

    def __post_init__(self):
        for name, low in (("steps", 1), ("seeds", 0)):  # one value or several, each once
            values = getattr(self, name)
            values = (values,) if isinstance(values, int) else values
            if not isinstance(values, (tuple, list)):
                raise ValueError(f"redteam: {name} must be a list of integers, got {values!r}")
            for v in values:
                check_int("redteam", name, v, low)
            dup = sorted({v for v in values if list(values).count(v) > 1})
            if dup:
                raise ValueError(f"redteam: {name} lists {', '.join(map(str, dup))} more than once")
            setattr(self, name, tuple(values))
        for name in self.references:
            check_reference(name)  # an unknown name or model fails here, before any work, listing the valid ones
        check_int("redteam", "budget", self.budget, 1, allow_none=True)
        check_int("redteam", "search_trials", self.search_trials, 0)
        check_float("redteam", "target_accuracy", self.target_accuracy, 0.0, 1.0)
        for lr in self.lrs:
            check_float("redteam", "lrs", lr, 0.0, open_low=True)

    def to_dict(self) -> dict:
        return to_dict(self)
