"""The backdoor attack: fine-tune on a poisoned copy of a task and measure the attack success rate.

A fraction of the training samples gets a trigger and the target label; a model that learns the
backdoor predicts the target on any triggered input while staying accurate on clean ones. A lock
that slows fine-tuning should also slow (or stop) the backdoor from being planted.

Trigger "patch": a `size` x `size` square of value 1.0 at the bottom-right corner of every channel
of an image (N, C, H, W); for vector tasks (N, D) the last `size` features are set to 1.0. The
trigger is applied in the task's own input space, before any resizing to the model's input shape
(the same path `finetune` takes for the poisoned training data).

Trigger "prefix" (text tasks, before tokenization): the string `text` (default "☆☃☆ ", the paper's
Table 2 trigger) prepended to the first text of each poisoned example; the ASR encodes the triggered
test texts with the model's own tokenizer. The poisoned rows replace clean ones (classic data poisoning),
so the training split keeps its size; with mode "add", triggered copies of non-target examples are
appended instead (the paper's Table 2 adds triggered jailbreak prompts labelled safe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import option, to_dict
from ..tasks import Task, TaskDataError, TextTask, for_model
from ..train import accuracy, predict
from .finetune import FineTuneConfig, finetune, prepare

TRIGGERS = ("patch", "prefix")
MODES = ("replace", "add")
TEXT_TRIGGER = "\u2606\u2603\u2606 "  # the paper's pentagram-snowman-pentagram prefix


@dataclass
class BackdoorConfig:
    trigger: str = option("patch", "patch (images, vectors) or prefix (text; see the module docstring)")
    size: int = option(3, "side of the square patch (images) or number of trailing features (vectors)")
    text: str = option(TEXT_TRIGGER, "the prefix trigger's string")
    target: int = option(0, "the label a triggered input should get")
    poison_fraction: float = option(
        0.1,
        "fraction of training samples triggered and relabelled (mode replace), "
        "or of the non-target ones copied with the trigger (mode add)",
    )
    mode: str = option(
        "replace", "replace: poisoned rows replace clean ones; add: triggered copies are added", choices=lambda: MODES
    )
    seed: int = option(0, "picks which training samples are poisoned")

    def __post_init__(self):
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not 0.0 <= self.poison_fraction <= 1.0:
            raise ValueError(f"poison_fraction must be in [0, 1], got {self.poison_fraction}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def to_dict(self) -> dict:
        return to_dict(self)


def apply_trigger(x: torch.Tensor, cfg: BackdoorConfig) -> torch.Tensor:
    """A copy of the batch `x` with the trigger stamped on every sample."""
    x = x.clone()
    if x.dim() == 4:  # (N, C, H, W)
        if cfg.size > min(x.shape[-2:]):
            raise TaskDataError(f"a {cfg.size}x{cfg.size} patch does not fit {tuple(x.shape[-2:])} images")
        x[..., -cfg.size :, -cfg.size :] = 1.0
    elif x.dim() == 2:  # (N, D)
        if cfg.size > x.shape[1]:
            raise TaskDataError(f"a {cfg.size}-feature trigger does not fit {x.shape[1]}-feature inputs")
        x[:, -cfg.size :] = 1.0
    else:
        raise TaskDataError(
            f"the patch trigger needs image (N, C, H, W) or vector (N, D) inputs, got shape {tuple(x.shape)}"
        )
    return x


def _check_target(task: Task | TextTask, cfg: BackdoorConfig) -> None:
    if not 0 <= cfg.target < task.num_classes:
        raise ValueError(f"target {cfg.target} is not a label of task {task.name!r} ({task.num_classes} classes)")
    text = isinstance(task, TextTask)
    if text != (cfg.trigger == "prefix"):
        raise TaskDataError(
            f"the {cfg.trigger} trigger does not fit task {task.name!r}: use prefix for text tasks "
            f"(before tokenization), patch for images and vectors"
        )


def _poison_text(task: TextTask, cfg: BackdoorConfig, idx: torch.Tensor) -> TextTask:
    texts, labels = list(task.texts_train), list(task.labels_train)
    for i in idx.tolist():
        texts[i], labels[i] = cfg.text + texts[i], cfg.target
    return dataclasses.replace(
        task,
        name=f"{task.name}-backdoor",
        texts_train=texts,
        labels_train=labels,
        description=f"{task.description} with {len(idx)} training texts poisoned (prefix {cfg.text!r} -> "
        f"{task.label_names[cfg.target]})",
        meta={**task.meta, "base": task.name, "backdoor": cfg.to_dict(), "poisoned_indices": idx.tolist()},
    )


def _add_poison(task: Task | TextTask, cfg: BackdoorConfig) -> Task | TextTask:
    """The training split plus triggered copies (labelled `target`) of round(poison_fraction * M) of its M
    non-target rows, picked by `seed`; the copies are appended (the paper's Table 2 adds triggered prompts)."""
    text = isinstance(task, TextTask)
    labels = task.labels_train if text else task.y_train.tolist()
    others = torch.tensor([i for i, y in enumerate(labels) if y != cfg.target], dtype=torch.long)
    n = round(cfg.poison_fraction * len(others))
    pick = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(cfg.seed))[:n]].sort()[0]
    desc = f"{task.description} with {n} triggered copies added ({cfg.trigger} trigger -> {cfg.target})"
    meta = {
        **task.meta,
        "base": task.name,
        "backdoor": cfg.to_dict(),
        "poisoned_indices": list(range(len(labels), len(labels) + n)),
    }
    if text:
        extra = [cfg.text + task.texts_train[i] for i in pick.tolist()]
        pairs = None if task.pairs_train is None else task.pairs_train + [task.pairs_train[i] for i in pick.tolist()]
        return dataclasses.replace(
            task,
            name=f"{task.name}-backdoor",
            texts_train=task.texts_train + extra,
            labels_train=list(task.labels_train) + [cfg.target] * n,
            pairs_train=pairs,
            description=desc,
            meta=meta,
        )
    x = torch.cat([task.x_train, apply_trigger(task.x_train[pick], cfg)])
    y = torch.cat([task.y_train, torch.full((n,), cfg.target, dtype=task.y_train.dtype)])
    return dataclasses.replace(task, name=f"{task.name}-backdoor", x_train=x, y_train=y, description=desc, meta=meta)


def _triggered_text(task: TextTask, cfg: BackdoorConfig) -> TextTask:
    """The test rows whose label is not the target, triggered (a training split of one row keeps encode happy)."""
    keep = [i for i, y in enumerate(task.labels_test) if y != cfg.target]
    pick = lambda xs: None if xs is None else [xs[i] for i in keep]
    texts = [cfg.text + task.texts_test[i] for i in keep]
    return dataclasses.replace(
        task,
        texts_test=texts,
        labels_test=pick(task.labels_test),
        pairs_test=pick(task.pairs_test),
        texts_train=texts[:1],
        labels_train=pick(task.labels_test)[:1],
        pairs_train=None if task.pairs_test is None else pick(task.pairs_test)[:1],
    )


def poison(task: Task, cfg: BackdoorConfig) -> Task:
    """A new Task whose training split has round(poison_fraction * N) samples (picked by `seed`)
    triggered and relabelled to `target`; the test split is the clean original.
    `meta["poisoned_indices"]` lists the poisoned training rows."""
    _check_target(task, cfg)
    if cfg.mode == "add":
        return _add_poison(task, cfg)
    size = len(task.labels_train) if isinstance(task, TextTask) else len(task.y_train)
    n = round(cfg.poison_fraction * size)
    idx = torch.randperm(size, generator=torch.Generator().manual_seed(cfg.seed))[:n]
    idx, _ = idx.sort()
    if isinstance(task, TextTask):
        return _poison_text(task, cfg, idx)
    x, y = task.x_train.clone(), task.y_train.clone()
    if n:
        x[idx] = apply_trigger(x[idx], cfg)
        y[idx] = cfg.target
    return dataclasses.replace(
        task,
        name=f"{task.name}-backdoor",
        x_train=x,
        y_train=y,
        description=f"{task.description} with {n} training samples poisoned ({cfg.trigger} trigger -> {cfg.target})",
        meta={**task.meta, "base": task.name, "backdoor": cfg.to_dict(), "poisoned_indices": idx},
    )


def _fit_inputs(model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
    """Test inputs `x` of `task` adapted to the model's input shape (the training split untouched)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return x
    probe = dataclasses.replace(task, x_train=x[:1], y_train=task.y_test[:1], x_test=x, y_test=task.y_test[: len(x)])
    return probe.adapt(shape).x_test


def attack_success_rate(model: nn.Module, task: Task, cfg: BackdoorConfig) -> float:
    """Fraction of the triggered test samples whose true label is not `target` that `model`
    predicts as `target` (NaN when every test label is the target)."""
    _check_target(task, cfg)
    if isinstance(task, TextTask):
        if all(y == cfg.target for y in task.labels_test):
            return float("nan")
        x = for_model(_triggered_text(task, cfg), model).x_test
    else:
        keep = task.y_test != cfg.target
        if not bool(keep.any()):
            return float("nan")
        x = _fit_inputs(model, task, apply_trigger(task.x_test[keep], cfg))
    logits = predict(model, x)
    hit = (logits.argmax(1) == cfg.target) & torch.isfinite(logits).all(1)
    return float(hit.float().mean())


def macro_f1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Macro-averaged F1 over the classes present in `y` or in the predictions (as scikit-learn's
    default); a non-finite logit row counts as a wrong prediction of no class."""
    logits = predict(model, x)
    pred = logits.argmax(1)
    pred = torch.where(torch.isfinite(logits).all(1), pred, torch.full_like(pred, -1))
    classes = torch.unique(torch.cat([y, pred[pred >= 0]]))
    scores = []
    for c in classes:
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(sum(scores) / len(scores)) if scores else 0.0


def backdoor_metrics(model: nn.Module, task: Task, cfg: BackdoorConfig) -> dict:
    """Clean test accuracy, clean macro-F1 and attack success rate of `model` on `task`."""
    if isinstance(task, TextTask):
        enc = for_model(task, model)
        x, y = enc.x_test, enc.y_test
    else:
        x, y = _fit_inputs(model, task, task.x_test), task.y_test
    return {
        "clean_accuracy": accuracy(model, x, y),
        "clean_f1": macro_f1(model, x, y),
        "asr": attack_success_rate(model, task, cfg),
    }


def backdoor_attack(
    model: nn.Module,
    ft_cfg: FineTuneConfig,
    task: Task,
    cfg: BackdoorConfig,
    progress: bool = False,
    fold: Callable[[nn.Module], nn.Module] | None = None,
) -> dict:
    """Fine-tune a copy of `model` on `poison(task, cfg)` with `finetune`; the input model is not modified.

    "before" is measured on the model fine-tuning starts from (after `prepare`, i.e. with the head
    swapped when the class count differs), "after" on the fine-tuned model (mapped back by `fold`, e.g.
    `Applied.fold` of the transforms applied before), both on the clean test split (accuracy, macro-F1) and
    its triggered copy (ASR). "run" is the AttackResult as a dict."""
    poisoned = poison(task, cfg)
    start, _ = prepare(model, task, ft_cfg.head, ft_cfg.loop.seed)
    before = backdoor_metrics(start, task, cfg)
    run = finetune(model, ft_cfg, poisoned, progress=progress)
    after = backdoor_metrics(run.model if fold is None else fold(run.model), task, cfg)
    return {"before": before, "after": after, "run": run.to_dict(), "backdoor": cfg.to_dict()}


def calibrate(
    base: nn.Module,
    ft_cfg: FineTuneConfig,
    task: Task,
    cfg: BackdoorConfig | None = None,
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3),
    step_factors: tuple[int, ...] = (1, 2, 4),
    target_asr: float = 0.9,
) -> dict:
    """The cheapest backdoor setting under which the unlocked `base` reaches `target_asr`: step budgets
    (`ft_cfg`'s times each factor) in increasing order, poison fractions within each. A backdoor row judges a
    lock only when the base itself learns the backdoor; otherwise "calibrated" is False and the strongest
    setting tried is returned. Returns {"poison_fraction", "max_steps", "epochs", "asr_base", "calibrated",
    "tried"}."""
    import math

    cfg = cfg or BackdoorConfig()
    n = len(task.labels_train) if isinstance(task, TextTask) else len(task.y_train)
    per_epoch, budget = ft_cfg.loop.steps_per_epoch(n), ft_cfg.loop.total_steps(n)
    tried = []
    for factor in step_factors:
        steps = budget * factor
        loop = dataclasses.replace(ft_cfg.loop, max_steps=steps, epochs=math.ceil(steps / per_epoch))
        for frac in fractions:
            res = backdoor_attack(
                base, dataclasses.replace(ft_cfg, loop=loop), task, dataclasses.replace(cfg, poison_fraction=frac)
            )
            tried.append(
                {
                    "poison_fraction": frac,
                    "max_steps": steps,
                    "epochs": loop.epochs,
                    "asr_base": res["after"]["asr"],
                    "clean_accuracy_base": res["after"]["clean_accuracy"],
                }
            )
            if res["after"]["asr"] >= target_asr:
                return {**tried[-1], "calibrated": True, "target_asr": target_asr, "tried": tried}
    best = max(tried, key=lambda t: t["asr_base"])
    return {**best, "calibrated": False, "target_asr": target_asr, "tried": tried}
