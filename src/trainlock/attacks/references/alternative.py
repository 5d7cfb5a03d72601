"""Reference `alternative:MODEL`: another public model the attacker could use instead of the released one.

The marginal-risk counterfactual: a lock on an open model matters only where the released weights beat the best
other open model an attacker can download. MODEL is a registered model name, built pretrained with a fresh head
for the task's classes (e.g. `effnet-lite1` for an `effnet-lite0` release, `smollm2-135m` for a `minilm-l6`
one), or `hf:DIR`, a local Hugging Face `save_pretrained` directory. It is attacked as the released weights are:

    probe          logistic regression on its frozen features (the red team's `probe` stage, `fit_probe`)
    OPT@LR         fine-tuning at each rate in `lrs` (default AdamW at 1e-4 and 1e-3) for the target's step
                   budget (the attack side's steps per run), else `steps`; batch `batch_size`, seed the target's

Text goes from the raw texts (`target.text`) through the alternative's own tokenizer; images are fitted to its
input shape. One `ReferenceRun` per setting ("alternative:effnet-lite1:probe",
"alternative:effnet-lite1:adamw@0.001"); a model that cannot be built (weights not installed), a task it cannot
read, or a run that fails is a run with `error`, never an exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...config import check_int, option
from .base import ReferenceRun, ReferenceTarget, register_reference

LRS = (1e-4, 1e-3)
STEPS = 100  # fine-tuning steps per run without a target budget
BATCH_SIZE = 32


def check_model(name: str | None) -> None:
    """ValueError unless `name` is a registered model or `hf:DIR` with a config.json."""
    from ...models import MODELS

    if not name:
        raise ValueError(
            "alternative: name the model, alternative:MODEL with MODEL a registered model "
            f"({', '.join(MODELS.names())}) or hf:DIR"
        )
    if name.startswith("hf:"):
        if not (Path(name[3:]) / "config.json").is_file():
            raise ValueError(f"alternative:{name}: {name[3:]!r} is not a Hugging Face model directory (no config.json)")
    elif name not in MODELS:
        raise ValueError(f"alternative: unknown model {name!r}; valid: {', '.join(MODELS.names())} or hf:DIR")


@register_reference("alternative")
@dataclass
class Alternative:
    """Another public model, built pretrained with a fresh head, probed and fine-tuned like the released one."""

    argument: ClassVar[str] = "model"  # alternative:MODEL sets `model`

    model: str | None = option(
        None, "the model: a registered name built pretrained (effnet-lite1, smollm2-135m) or hf:DIR (required)"
    )
    lrs: tuple[float, ...] = option(LRS, "fine-tuning learning rates (one run each)")
    optimizer: str = option("adamw", "the fine-tuning optimizer")
    steps: int | None = option(None, f"optimizer steps per run (default: the target's step budget, else {STEPS})")
    batch_size: int = option(BATCH_SIZE, "minibatch size")
    probe: bool = option(True, "also probe its frozen features (logistic regression)")
    device: str = option("auto", "cpu, cuda, or auto (CUDA when present)")

    def __post_init__(self):
        check_model(self.model)
        self.lrs = tuple(float(lr) for lr in self.lrs)
        if any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"alternative: lrs must be positive numbers, got {self.lrs!r}")
        check_int("alternative", "steps", self.steps, 1, allow_none=True)
        check_int("alternative", "batch_size", self.batch_size, 1)
        from ...optimizers import OPTIMIZERS
        from ...train.loop import check_device

        OPTIMIZERS.get(self.optimizer)  # an unknown name fails here, listing the valid ones
        check_device(self.device)

    def __call__(self, target: ReferenceTarget) -> list[ReferenceRun]:
        name = f"alternative:{self.model}"
        t0 = time.perf_counter()
        try:
            task, init = self._setup(target)
        except Exception as e:  # no weights installed, a task it cannot read: one row with the error
            return [ReferenceRun(name, error=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - t0)]
        built_s = time.perf_counter() - t0  # building the model is shared by every run: each row carries it
        runs = [self._probe(name, init, task, target.seed, built_s)] if self.probe else []
        steps = self.steps or target.steps or STEPS
        runs += [self._finetune(name, init, task, lr, steps, target.seed, built_s) for lr in self.lrs]
        return runs

    def _setup(self, target: ReferenceTarget):
        """(the task as the alternative reads it, the alternative with its seeded fresh head)."""
        import torch

        from ...models import build
        from ...tasks import for_model

        source = target.text
        if source is None:
            source = target.task
            if not source.x_train.is_floating_point():
                raise ValueError(
                    f"needs the raw texts: task {source.name!r} holds the released model's token ids and the "
                    "target has no text (give ReferenceTarget(text=TextTask))"
                )
        shape = None if target.text is not None else tuple(target.task.input_shape)
        with torch.random.fork_rng(devices=[]):  # the head's init is seeded; the caller's random stream is kept
            torch.manual_seed(target.seed)
            model = build(self.model, input_shape=shape, num_classes=source.num_classes)
        return for_model(source, model), model

    def _probe(self, name: str, init, task, seed: int, built_s: float) -> ReferenceRun:
        from ...train import resolve_device
        from ..stages.probe import fit_probe

        t0 = time.perf_counter()
        run = ReferenceRun(f"{name}:probe", n_train=len(task.y_train))
        try:
            y_train = task.y_train.numpy()
            if len(np.unique(y_train)) < 2:
                raise ValueError(f"the training split has one class ({np.unique(y_train).tolist()})")
            init.to(resolve_device(self.device))
            got = fit_probe(init, task.x_train, y_train, task.x_test, task.y_test.numpy(), seed=seed)
            if got is None:
                raise ValueError("no feature set (the head's input was never computed)")
            run.accuracy = got.pop("test_accuracy")
            run.details = {"model": self.model, **got, "n_test": len(task.y_test), "build_s": built_s}
        except Exception as e:  # a row with its error (base.py's contract)
            run.error = f"{type(e).__name__}: {e}"
        run.wall_s = time.perf_counter() - t0 + built_s
        return run

    def _finetune(self, name: str, init, task, lr: float, steps: int, seed: int, built_s: float) -> ReferenceRun:
        import torch

        from ...train import LoopConfig, accuracy, clone_model, fit

        t0 = time.perf_counter()
        run = ReferenceRun(f"{name}:{self.optimizer}@{lr:g}", n_train=len(task.y_train))
        try:
            per_epoch = -(-len(task.y_train) // self.batch_size)
            loop = LoopConfig(
                optimizer=self.optimizer,
                lr=lr,
                epochs=-(-steps // per_epoch),
                max_steps=steps,
                batch_size=self.batch_size,
                seed=seed,
                device=self.device,
            )
            model = clone_model(init)
            with torch.random.fork_rng(devices=[]):
                res = fit(model, task, loop, progress=False)
            run.accuracy = accuracy(model, task.x_test, task.y_test)
            run.details = {
                "model": self.model,
                "optimizer": f"{self.optimizer}@{lr:g}",
                "steps": res.steps,
                "batch_size": self.batch_size,
                "n_test": len(task.y_test),
                "build_s": built_s,
            }
            if res.stopped:
                run.details["stopped"] = res.stopped
            del model
        except Exception as e:  # as for the probe: a row with its error
            run.error = f"{type(e).__name__}: {e}"
        run.wall_s = time.perf_counter() - t0 + built_s
        return run


__all__ = ["LRS", "STEPS", "Alternative", "check_model"]
