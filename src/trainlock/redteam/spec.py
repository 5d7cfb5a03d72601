"""One red-team run as data: pre-transforms x optimizer x schedule x data. Serializes to JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..attacks import FineTuneConfig
from ..config import from_dict, to_dict

DATA_MODES = ("clean", "backdoor")


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
    head: str = "auto"  # auto | keep | reset
    data: str = "clean"  # clean | backdoor (poisoned training split, attack success rate reported)
    seed: int = 0
    target_accuracy: float = 0.7
    eval_every: int = 50

    def __post_init__(self):
        self.transforms = tuple((str(n), dict(o)) for n, o in self.transforms)
        if self.data not in DATA_MODES:
            raise ValueError(f"data must be one of {DATA_MODES}, got {self.data!r}")

    @property
    def name(self) -> str:
        """Readable name: transforms, then optimizer and lr, e.g. 'rescale+adam@0.001'."""
        parts = [n + ("" if not o else "(" + ",".join(f"{k}={v}" for k, v in sorted(o.items())) + ")")
                 for n, o in self.transforms]
        extra = "" if self.head == "auto" else f"[head={self.head}]"
        extra += "" if self.data == "clean" else f"[{self.data}]"
        return "+".join(parts + [f"{self.optimizer}@{self.lr:g}"]) + extra

    def key(self) -> str:
        """Stable identity for resuming: a hash of the sorted JSON."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AttackSpec":
        return from_dict(cls, data)

    def finetune_config(self, device: str = "cpu") -> FineTuneConfig:
        return FineTuneConfig(
            optimizer=self.optimizer, lr=self.lr, epochs=self.epochs, max_steps=self.max_steps,
            batch_size=self.batch_size, lr_gamma=self.lr_gamma, head=self.head, seed=self.seed,
            target_accuracy=self.target_accuracy, eval_every=self.eval_every, device=device,
        )


@dataclass
class RedTeamConfig:
    """The suite and how to run it."""

    budget: int | None = None  # at most this many runs (the suite's priority order decides which)
    epochs: int = 1
    max_steps: int | None = None  # cap on fine-tuning steps per run (None: whole epochs)
    batch_size: int = 64
    workers: int = 2  # process pool size; 0 runs in this process
    seed: int = 0
    target_accuracy: float = 0.7
    search_trials: int = 0  # extra Optuna trials after the suite (0: none)
    include: tuple = field(default_factory=tuple)  # run only attacks whose name contains one of these
    optimizers: tuple = field(default_factory=tuple)  # restrict to these optimizers (empty: all registered)
    transforms: tuple = field(default_factory=tuple)  # restrict to these transforms (empty: all registered)
    lrs: tuple = field(default_factory=tuple)  # one log grid for every optimizer (empty: suite.LR_GRID)
    device: str = "cpu"  # runs on CUDA go one at a time in this process (workers is then ignored)

    def to_dict(self) -> dict:
        return to_dict(self)
