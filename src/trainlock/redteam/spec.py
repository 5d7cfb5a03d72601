"""One red-team run as data: pre-transforms x optimizer x schedule x data. Serializes to JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..attacks import FineTuneConfig
from ..attacks.transforms import TRANSFORMS
from ..config import check_float, check_int, from_dict, option, to_dict
from ..optimizers import OPTIMIZERS
from ..train import LoopConfig
from .backends import RunnerConfig

DATA_MODES = ("clean", "backdoor")
INITS = ("released", "scratch", "distill")
# field: default, for fields added after results directories existed (their keys must not change)
_ADDED = {"schedule": "step", "init": "released", "distill_steps": 500, "poison_fraction": 0.1}


@dataclass
class AttackSpec:
    """A composable attack. `transforms` are (name, options) pairs applied in order before training."""

    optimizer: str = "adam"
    lr: float = 1e-3
    transforms: tuple = ()  # ((name, {options}), ...) from trainlock.attacks.transforms.TRANSFORMS
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr_gamma: float | None = None  # step-LR decay per epoch
    schedule: str = "step"  # or "linear" (the paper's text setting); see LoopConfig
    init: str = "released"  # released weights; scratch: re-initialized (the baseline); distill: a fresh student
    distill_steps: int = 500  # init="distill": steps distilling the released model's logits (counted in the cost)
    poison_fraction: float = 0.1  # data="backdoor": fraction of the training split poisoned
    head: str = "auto"  # auto | keep | reset
    data: str = "clean"  # clean | backdoor (poisoned training split, attack success rate reported)
    seed: int = 0
    target_accuracy: float = 0.7
    eval_every: int = 50

    def __post_init__(self):
        self.transforms = tuple((str(n), dict(o)) for n, o in self.transforms)
        if self.data not in DATA_MODES:
            raise ValueError(f"data must be one of {DATA_MODES}, got {self.data!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init != "released" and self.transforms:
            raise ValueError(f"init={self.init!r} starts from fresh weights: weight-space transforms do not apply")

    @property
    def name(self) -> str:
        """Readable name: transforms, then optimizer and lr, e.g. 'rescale+adam@0.001', 'scratch:sgd@0.01'."""
        parts = [n + ("" if not o else "(" + ",".join(f"{k}={v}" for k, v in sorted(o.items())) + ")")
                 for n, o in self.transforms]
        extra = "" if self.head == "auto" else f"[head={self.head}]"
        extra += "" if self.data == "clean" else f"[{self.data}]"
        pre = "" if self.init == "released" else f"{self.init}:"
        return pre + "+".join(parts + [f"{self.optimizer}@{self.lr:g}"]) + extra

    @property
    def insider(self) -> bool:
        """Reads the lock's private record (e.g. sv-clip with use_record): not what a real attacker has."""
        return any(o.get("use_record") for _, o in self.transforms)

    def key(self) -> str:
        """Stable identity for resuming: a hash of the sorted JSON (fields added since 0.1 count only when
        they differ from their default, so older results directories still resume)."""
        d = {k: v for k, v in self.to_dict().items() if not (k in _ADDED and v == _ADDED[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AttackSpec":
        return from_dict(cls, data)

    def finetune_config(self, device: str = "cpu") -> FineTuneConfig:
        loop = LoopConfig(optimizer=self.optimizer, lr=self.lr, epochs=self.epochs, max_steps=self.max_steps,
                          batch_size=self.batch_size, lr_gamma=self.lr_gamma, schedule=self.schedule, seed=self.seed,
                          device=device)
        return FineTuneConfig(loop=loop, head=self.head, target_accuracy=self.target_accuracy,
                              eval_every=self.eval_every)


@dataclass
class RedTeamConfig:
    """The suite and how to run it."""

    loop: LoopConfig = option(factory=lambda: LoopConfig(device="cpu"),
                              help="epochs, step cap, batch size, seed and device of every run (the suite sets "
                                   "the optimizer and learning rate per run; on cuda runs go one at a time)")
    budget: int | None = option(None, "at most this many runs, in the suite's priority order (default: all)")
    runner: RunnerConfig = option(factory=RunnerConfig, help="backend and workers", flat=True)
    target_accuracy: float = option(0.7, "accuracy that defines steps_to_target")
    search_trials: int = option(0, "Optuna trials after the suite (resumable)")
    storage: str | None = option(None, "Optuna storage of the search (default: SQLite in the results directory; "
                                       "any RDB URL, e.g. postgresql+psycopg://USER@HOST/DB, lets several machines "
                                       "share one study)")
    include: tuple[str, ...] = option(factory=tuple, help="run only attacks whose name contains one of these (default: every attack)")
    optimizers: tuple[str, ...] = option(factory=tuple, help="only these optimizers (default: every registered one)",
                               choices=lambda: OPTIMIZERS.names())
    transforms: tuple[str, ...] = option(factory=tuple, help="only these transforms (default: every registered one)",
                               choices=lambda: TRANSFORMS.names())
    lrs: tuple[float, ...] = option(factory=tuple, help="one learning-rate grid for every optimizer, e.g. 1e-8 1e-7 1e-6 1e-5 "
                                            "1e-4 1e-3 (paper Fig. 3; default: a grid per optimizer)")

    def __post_init__(self):
        check_int("redteam", "budget", self.budget, 1, allow_none=True)
        check_int("redteam", "search_trials", self.search_trials, 0)
        check_float("redteam", "target_accuracy", self.target_accuracy, 0.0, 1.0)
        for lr in self.lrs:
            check_float("redteam", "lrs", lr, 0.0, open_low=True)

    def to_dict(self) -> dict:
        return to_dict(self)
