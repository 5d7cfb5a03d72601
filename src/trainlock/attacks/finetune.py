"""The plain fine-tuning attack: train a (locked or base) model on an unauthorized task.

Records the per-step loss, test accuracy every `eval_every` steps and per epoch, and the number
of steps to reach `target_accuracy` (None when not reached). A non-finite loss keeps the last
good state (an attacker can always checkpoint) and is recorded as `diverged`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..config import check_float, check_int, option, to_dict
from ..models import find_head, replace_head
from ..tasks import Task, for_model
from ..train import Checkpoint, LoopConfig, LoopHooks, accuracy, clone_model, fit, predict, resolve_device

HEAD_MODES = ("auto", "keep", "reset")


@dataclass
class FineTuneConfig:
    """A fine-tuning attack: the loop (default: Adam at 1e-3 for one epoch, the usual first try) and
    what is measured along the way."""

    loop: LoopConfig = option(factory=LoopConfig, help="the training loop")
    head: str = option(
        "auto", "auto: a fresh head when the label count differs; keep; reset", choices=lambda: HEAD_MODES
    )
    target_accuracy: float = option(0.7, "accuracy whose first crossing gives steps_to_target")
    eval_every: int = option(50, "steps between accuracy checks for steps_to_target")
    eval_samples: int = option(2000, "test samples used by those checks (the final accuracy uses all)")
    epoch_curve: bool = option(
        True,
        "test accuracy after every epoch (the run's curve); off: the final accuracy only, one evaluation of the "
        "test split less per epoch (the training is the same either way)",
        omit_default=True,
    )
    lora: int | None = option(
        None,
        "LoRA rank: train low-rank adapters (and the head) instead of every weight, "
        "merged back at the end (default: full fine-tuning)",
    )
    lora_alpha: float | None = option(None, "LoRA scaling alpha (default: 2 x rank)")

    def __post_init__(self):
        check_int("attack", "lora", self.lora, 1, allow_none=True)
        check_float("attack", "lora_alpha", self.lora_alpha, 0.0, open_low=True, allow_none=True)
        if self.head not in HEAD_MODES:
            raise ValueError(f"head must be one of {HEAD_MODES}, got {self.head!r}")
        check_int("attack", "eval_every", self.eval_every, 1)
        check_int("attack", "eval_samples", self.eval_samples, 1)
        check_float("attack", "target_accuracy", self.target_accuracy, 0.0, 1.0)

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass
class AttackResult:
    """Outcome of one attack run. `accuracy` is the final test accuracy on the attack task."""

    task: str
    config: dict
    accuracy: float
    curve: list[float]  # test accuracy after each epoch
    evals: list[tuple[int, float]]  # (step, test accuracy on eval_samples) every eval_every steps
    losses: list[float]  # training loss per step
    steps_to_target: int | None  # None: target not reached
    steps: int
    diverged: str | None = None
    wall_s: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)
    monitor_first_broken: dict | None = None  # {"lock: invariant": first checked step it broke}; monitor runs only

    def to_dict(self) -> dict:
        """JSON-ready (the model is left out; monitor_first_broken only when a monitor was used)."""
        out = {
            "task": self.task,
            "config": self.config,
            "accuracy": self.accuracy,
            "curve": self.curve,
            "evals": [list(e) for e in self.evals],
            "losses": self.losses,
            "steps_to_target": self.steps_to_target,
            "steps": self.steps,
            "diverged": self.diverged,
            "wall_s": self.wall_s,
        }
        if self.monitor_first_broken is not None:
            out["monitor_first_broken"] = dict(self.monitor_first_broken)
        return out


def prepare(model: nn.Module, task: Task, head: str, seed: int) -> tuple[nn.Module, Task]:
    """Copy the model, fit the task to its input shape, and swap the head if asked or needed."""
    model = clone_model(model)
    task = for_model(task, model)
    _, old = find_head(model)
    if head == "reset" or (head == "auto" and old.out_features != task.num_classes):
        replace_head(model, task.num_classes, seed=seed)
        if hasattr(model, "num_classes"):
            model.num_classes = task.num_classes
            if isinstance(getattr(model, "config", None), dict):
                model.config["num_classes"] = task.num_classes
    elif old.out_features < task.num_classes:
        raise ValueError(
            f"head has {old.out_features} outputs but task {task.name!r} has {task.num_classes} "
            f"classes; use head='reset' (or 'auto')"
        )
    return model, task


class _Checks:
    """The attack's accuracy checks, carried in a checkpoint so a resumed attack reports what a whole one does."""

    def __init__(self, evals: list, first: list):
        self.evals, self.first = evals, first

    def state_dict(self) -> dict:
        return {"evals": [list(e) for e in self.evals], "first": list(self.first)}

    def load_state_dict(self, state: dict) -> None:
        self.evals[:] = [tuple(e) for e in state["evals"]]
        self.first[:] = state["first"]


def finetune(
    model: nn.Module,
    cfg: FineTuneConfig,
    task: Task,
    progress: bool = True,
    monitor=None,
    checkpoint: Checkpoint | None = None,
) -> AttackResult:
    """Fine-tune a copy of `model` on `task` with `cfg`; the input model is not modified.

    `checkpoint`: write the run's state there every `checkpoint.every` steps (and resume from it).

    `monitor`: a `trainlock.certify.monitor.LockMonitor`, bound to the training copy and checked at step 0
    and then as fit's on_step (it may stop the run); its first_broken goes to the result.
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.loop.seed)
    model, task = prepare(model, task, cfg.head, cfg.loop.seed)
    if cfg.lora is not None:
        from .lora import add_lora

        model = add_lora(model, cfg.lora, cfg.lora_alpha)
    model.to(resolve_device(cfg.loop.device))
    probe = task.subset(n_test=cfg.eval_samples, seed=cfg.loop.seed)
    evals: list[tuple[int, float]] = []
    first: list[int] = []

    def check(step: int) -> None:
        acc = accuracy(model, probe.x_test, probe.y_test)
        evals.append((step, acc))
        if acc >= cfg.target_accuracy and not first:
            first.append(step)

    check(0)
    if monitor is not None:
        if hasattr(monitor, "bind"):
            monitor.bind(model)
        monitor(0)

    def on_step(step: int, loss: float, extras: dict) -> bool | None:
        if step % cfg.eval_every == 0:
            check(step)
        return monitor(step, loss, extras) if monitor is not None else None

    last: dict = {}  # the last epoch's test logits: the final accuracy when nothing changed the model since

    def on_epoch(epoch: int) -> dict:
        last["logits"] = predict(model, task.x_test)
        return {"accuracy": _accuracy(last["logits"], task.y_test)}

    if checkpoint is not None:
        checkpoint.state = _Checks(evals, first)
    res = fit(
        model,
        task,
        cfg.loop,
        hooks=LoopHooks(on_step, on_epoch if cfg.epoch_curve else None, checkpoint),
        desc=f"attack {task.name}",
        progress=progress,
    )
    if res.stopped and res.steps and (not evals or evals[-1][0] != res.steps):
        check(res.steps)
    if cfg.lora is not None:
        from .lora import merge_lora

        model = merge_lora(model)
    # the last epoch ended the run (no early stop, no merge since): its evaluation is the final one
    logits = last.get("logits") if res.stopped is None and cfg.lora is None and res.epochs else None
    if logits is None:
        logits = predict(model, task.x_test)
    final = _accuracy(logits, task.y_test)
    diverged = res.stopped or _blown_up(model, task.x_test, logits)
    return AttackResult(
        task=task.name,
        config=cfg.to_dict(),
        accuracy=final,
        curve=[e["accuracy"] for e in res.epochs if "accuracy" in e],
        evals=evals,
        losses=res.losses,
        steps_to_target=first[0] if first else None,
        steps=res.steps,
        diverged=diverged,
        wall_s=time.perf_counter() - t0,
        model=model,
        monitor_first_broken=dict(getattr(monitor, "first_broken", {})) if monitor is not None else None,
    )


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """`trainlock.train.accuracy` from logits already computed (a non-finite row counts as wrong)."""
    ok = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
    return float(ok.float().mean())


def _blown_up(model: nn.Module, x, logits: torch.Tensor | None = None) -> str | None:
    """Why the run counts as diverged although every loss it saw was finite (the last step blew the weights
    up: the model's outputs are inf / nan), or None. `logits`: the final model's eval-mode outputs on `x`,
    when already computed (its first 64 rows are what this would compute)."""
    try:
        params = list(model.parameters())
        if not all(bool(torch.isfinite(p).all()) for p in params):
            return "non-finite weights after the last step"
        if logits is not None and len(logits):
            if not bool(torch.isfinite(logits[:64]).all()):
                return "non-finite outputs after the last step (the weights blew up)"
            return None
        device = params[0].device if params else torch.device("cpu")
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(x[:64].to(device))
        model.train(was)
        out = out.logits if hasattr(out, "logits") else out
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            return "non-finite outputs after the last step (the weights blew up)"
    except Exception:  # a model this check cannot call is judged by its losses alone
        return None
    return None
