"""The relearning attack on unlearning, and whether a lock keeps a forgotten class forgotten.

The SpecDef paper's forgetting study: a model "unlearns" one class by continued training on the
task without it (the paper's baseline unlearning), and an attacker then relearns it by plain SGD on
the full task (the relearning attack: SGD, lr 0.1, one epoch). Locking the unlearned model with
SpecDef on the retain task (the task without the class) should keep that relearning slow.
`relearning_study` reports per-class test accuracy after every stage (the paper's Table 3 layout):

    base | unlearned | unlearned + relearned | unlearned + <lock> | unlearned + <lock> + relearned
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import check_int, option, to_dict
from ..tasks import Task, for_model
from ..train import LoopConfig, clone_model, fit, predict
from .finetune import AttackResult, FineTuneConfig, finetune


@dataclass
class RelearnConfig:
    """The forgetting study: which class, how it is unlearned, and the relearning attack."""

    forget_class: int = option(1, "the class the model unlearns and the attacker relearns")
    unlearn: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="sgd", lr=0.01, epochs=2),
        help="continued training on the task without the class",
    )
    relearn: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="sgd", lr=0.1, epochs=1),
        help="the relearning attack (the paper: SGD at lr 0.1 for one epoch)",
    )

    def __post_init__(self):
        check_int("relearn", "forget_class", self.forget_class, 0)

    def to_dict(self) -> dict:
        return to_dict(self)

    def relearn_attack(self) -> FineTuneConfig:
        return FineTuneConfig(loop=self.relearn, head="keep")


def _check_class(task: Task, c: int) -> None:
    if not 0 <= c < task.num_classes:
        raise ValueError(f"class {c} is not a label of task {task.name!r} ({task.num_classes} classes)")


def drop_class(task: Task, c: int) -> Task:
    """`task` without class `c` in either split; labels keep their ids (num_classes is unchanged)."""
    _check_class(task, c)
    tr, te = task.y_train != c, task.y_test != c
    return dataclasses.replace(
        task,
        name=f"{task.name}-without-{c}",
        x_train=task.x_train[tr],
        y_train=task.y_train[tr],
        x_test=task.x_test[te],
        y_test=task.y_test[te],
        description=f"{task.description} without class {c}",
        meta={**task.meta, "base": task.name, "dropped_class": c},
    )


def per_class_accuracy(model: nn.Module, task: Task) -> list[float]:
    """Test accuracy of `model` on each class 0..num_classes-1 (NaN for a class with no test
    sample); inputs are adapted to the model's input shape; a non-finite logit row is wrong."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        task = dataclasses.replace(task, x_train=task.x_test[:1], y_train=task.y_test[:1]).adapt(shape)
    logits = predict(model, task.x_test)
    ok = (logits.argmax(1) == task.y_test) & torch.isfinite(logits).all(1)
    out = []
    for c in range(task.num_classes):
        sel = task.y_test == c
        out.append(float(ok[sel].float().mean()) if bool(sel.any()) else math.nan)
    return out


def unlearn(model: nn.Module, task: Task, cfg: RelearnConfig, progress: bool = False) -> nn.Module:
    """A copy of `model` continued-trained on `task` without `cfg.forget_class` (the baseline
    unlearning of the paper); the input model is not modified."""
    retain = drop_class(task, cfg.forget_class)
    retain = for_model(retain, model)
    torch.manual_seed(cfg.unlearn.seed)
    out = clone_model(model)
    fit(out, retain, cfg.unlearn, desc="unlearn", progress=progress)
    return out


def relearn(model: nn.Module, task: Task, cfg: RelearnConfig, progress: bool = False) -> AttackResult:
    """The relearning attack: fine-tune a copy of `model` on the FULL task (head kept)."""
    _check_class(task, cfg.forget_class)
    return finetune(model, cfg.relearn_attack(), task, progress=progress)


def _row(name: str, model: nn.Module, task: Task, c: int, run: AttackResult | None = None) -> dict:
    per = per_class_accuracy(model, task)
    others = [a for i, a in enumerate(per) if i != c and not math.isnan(a)]
    row = {
        "name": name,
        "per_class": per,
        "forget_accuracy": per[c],
        "retain_accuracy": sum(others) / len(others) if others else math.nan,
    }
    if run is not None:
        row["run"] = run.to_dict()
    return row


def relearning_study(
    base: nn.Module,
    task: Task,
    cfg: RelearnConfig,
    lock_fn: Callable[[nn.Module, Task], nn.Module],
    lock_name: str = "SpecDef",
    progress: bool = False,
) -> list[dict]:
    """Per-class test accuracy after each stage of the forgetting study, one row per stage:

    base, unlearned, unlearned + relearned, unlearned + <lock_name>, unlearned + <lock_name> + relearned.

    `lock_fn(model, retain_task)` returns a locked copy of `model`; it receives the task without the
    forgotten class, e.g. `lambda m, t: trainlock.lock(m, trainlock.SpecDefConfig(...), t)`.
    Each row: name, per_class (num_classes floats), forget_accuracy, retain_accuracy (mean over the
    other classes), and for the relearned rows the attack run (`AttackResult.to_dict()`).
    """
    c = cfg.forget_class
    _check_class(task, c)
    unlearned = unlearn(base, task, cfg, progress=progress)
    relearned = relearn(unlearned, task, cfg, progress=progress)
    locked = lock_fn(unlearned, drop_class(task, c))
    locked_relearned = relearn(locked, task, cfg, progress=progress)
    return [
        _row("base", base, task, c),
        _row("unlearned", unlearned, task, c),
        _row("unlearned + relearned", relearned.model, task, c, relearned),
        _row(f"unlearned + {lock_name}", locked, task, c),
        _row(f"unlearned + {lock_name} + relearned", locked_relearned.model, task, c, locked_relearned),
    ]
