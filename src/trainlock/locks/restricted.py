"""What the locks that train against a restricted domain share (SOPHON-, RepNoise- and condition-number-
style): the restricted task, endless seeded batches of it, the suppression losses, and the one claim such a
lock can honestly certify from the weights: "a fixed simulated fine-tuning attack on the restricted domain,
run from these weights, ends at or below this accuracy".

That certificate measures one attack. It says nothing about other optimizers, rates or budgets, and
nothing about training from scratch: the red team measures those.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import option
from ..models.base import replace_head
from ..tasks import Task, for_model
from ..train import LoopConfig, LoopHooks, accuracy, batches, clone_model, evaluate, fit
from .base import Certificate, Locked, TaskLock, trained

HEADS = ("own", "fresh")


@dataclass
class SimulatedAttack:
    """The fixed fine-tuning attack the certificate runs from the locked weights."""

    optimizer: str = option("adam", "optimizer of the simulated attack")
    lr: float = option(1e-3, "its learning rate")
    steps: int = option(100, "its steps (batch 64, the restricted task's training split)")
    test_samples: int = option(1000, "restricted test samples it is scored on")
    head: str = option(
        "own",
        "own: the attack trains the model's first num_classes outputs; fresh: it puts a new linear head of the "
        "restricted task's classes on the head's input first (an attacker with a new label set; needed when "
        "the task has more classes than the model has outputs)",
        choices=lambda: HEADS,
    )

    max_accuracy: float | None = option(
        None,
        "the claim: accuracy after the attack <= this (default, set by apply: the restricted task's chance + 0.10)",
    )

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"simulated attack: head must be one of {HEADS}, got {self.head!r}")


def endless(task: Task, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled minibatches of the training split, reshuffled every pass, forever."""
    epoch = 0
    while True:
        yield from batches(task.x_train, task.y_train, batch_size, seed + epoch)
        epoch += 1


def fit_logits(logits: torch.Tensor, task: Task, lock: str) -> torch.Tensor:
    """The model's logits for the restricted task's classes (its first num_classes outputs)."""
    if logits.shape[1] < task.num_classes:
        raise ValueError(
            f"{lock}: the model has {logits.shape[1]} outputs but restricted task {task.name!r} has "
            f"{task.num_classes} classes"
        )
    return logits[:, : task.num_classes]


def inverse_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SOPHON's inverse cross-entropy, -log(1 - p_y): small when the true class is unlikely; its gradient
    stays bounded as p_y -> 0, unlike ascent on the cross-entropy."""
    p = F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()


def kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform || softmax(logits)), averaged over the batch: zero when the prediction is uniform."""
    k = logits.shape[1]
    return (-F.log_softmax(logits.float(), dim=1).mean(1) - math.log(k)).mean()


def simulated_attack(model: nn.Module, task: Task, attack: SimulatedAttack, seed: int = 0) -> float:
    """Restricted-task test accuracy after `attack` fine-tunes a copy of `model` (the model's own outputs, first
    num_classes of them, or with `attack.head` "fresh" a new head seeded with `seed`; the copy is thrown away)."""
    m = clone_model(model)
    if attack.head == "fresh":
        replace_head(m, task.num_classes, seed)
    t = for_model(task, m)
    loop = LoopConfig(
        optimizer=attack.optimizer,
        lr=attack.lr,
        epochs=10**6,
        max_steps=attack.steps,
        batch_size=64,
        seed=seed,
        device=str(next(m.parameters()).device),
    )

    def loss(model, x, y):
        return F.cross_entropy(fit_logits(model(x), task, "simulated attack"), y), {}

    fit(m, t, loop, loss, desc="simulated attack", progress=False)
    x, y = t.x_test[: attack.test_samples], t.y_test[: attack.test_samples]
    return accuracy(m, x, y)


def attack_certificate(
    lock: str, model: nn.Module, task: Task, attack: SimulatedAttack, mechanism: str, details: dict
) -> Certificate:
    acc = simulated_attack(model, task, attack)
    return Certificate(
        lock=lock,
        invariant=(
            f"accuracy on {task.name!r} (first {attack.test_samples} test samples) after {attack.steps} steps "
            f"of {attack.optimizer} lr {attack.lr:g} fine-tuning from these weights"
        ),
        measured=acc,
        required=float(attack.max_accuracy),
        relation="<=",
        proof_of_gap=f"{mechanism}; this one attack ends at or below the claimed accuracy",
        preservation=(
            "none: the certificate re-runs one fixed attack; any other optimizer, rate or budget may "
            "escape it, and the weights can be fine-tuned away from the trap"
        ),
        threat_model="release-time",
        adversary_can_remove=True,
        removal=(
            "an adversary with the weights fine-tunes with another optimizer, rate or budget, re-initializes "
            "the affected layers, or trains from scratch; the red team measures these"
        ),
        method="trainlock.locks.restricted.simulated_attack (a seeded fine-tuning run on a copy)",
        details={**details, "attack": dataclasses.asdict(attack)},
    )


@dataclass
class RestrictedRecord:
    """What a restricted-domain lock's apply measured: the claim its certificate checks."""

    retain_task: str | None = option(None, "the authorized task")
    max_accuracy: float | None = option(
        None,
        "the claim: the simulated attack ends at or below this accuracy "
        "(the config's, else the restricted task's chance + 0.10)",
    )


class RestrictedLock(TaskLock):
    """What the restricted-domain locks share: config handling, the restricted task, the training run over
    the authorized task's split and the certificate. A subclass is registered with its config (a dataclass
    with `restricted`, `loop` and `attack`), sets `mechanism`, and implements `objective`."""

    mechanism: ClassVar[str]
    record_cls = RestrictedRecord

    def restricted_task(self) -> Task:
        if not self.cfg.restricted:
            raise ValueError(f"{self.name}: 'restricted' must name the task the lock must resist (e.g. fashion-mnist)")
        return self.task(self.cfg.restricted)

    def objective(self, locked: nn.Module, restricted: Task, stream) -> tuple[Callable, dict, Callable | None]:
        """(loss_fn(model, x, y) -> (loss, {}), running sums (with "n") that it adds to, cleanup or None)."""
        raise NotImplementedError

    def details(self, model: nn.Module | None, record: RestrictedRecord) -> dict:
        """Extra certificate details (the lock's own settings and measurements)."""
        return {}

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        if retain is None:
            raise ValueError(f"{self.name}: apply needs the retain (authorized) task")
        restricted = for_model(self.restricted_task(), model)
        if restricted.name == retain.name:
            raise ValueError(f"{self.name}: the restricted and the retain task are both {retain.name!r}")
        retain = for_model(retain, model)
        torch.manual_seed(self.cfg.loop.seed)
        locked = clone_model(model)
        stream = endless(restricted, self.cfg.loop.batch_size, self.cfg.loop.seed + 1)
        loss_fn, sums, cleanup = self.objective(locked, restricted, stream)

        def on_epoch(epoch: int) -> dict:
            n = max(1, sums["n"])
            out = {k: v / n for k, v in sums.items() if k != "n"}
            sums.update(dict.fromkeys(sums, 0.0))
            return {**out, "retain_accuracy": evaluate(locked, retain)}

        def run():
            try:
                return fit(
                    locked,
                    retain,
                    self.cfg.loop,
                    loss_fn,
                    LoopHooks(on_epoch=on_epoch, checkpoint=checkpoint),
                    desc=self.name,
                    progress=progress,
                )
            finally:
                if cleanup is not None:
                    cleanup()

        report = trained(model, locked, retain, self.cfg, run)
        claim = self.attack_claim(restricted)
        record = self.record_cls(retain_task=retain.name, max_accuracy=claim, **self.after_apply(locked, restricted))
        return Locked(locked, record, report)

    def attack_claim(self, restricted: Task) -> float | None:
        """The simulated attack's claim apply records: the config's, else the restricted task's chance + 0.10;
        None for a lock whose config has no simulated attack (it certifies something else)."""
        attack = getattr(self.cfg, "attack", None)
        if attack is None:
            return None
        return min(1.0, restricted.chance + 0.10) if attack.max_accuracy is None else attack.max_accuracy

    def after_apply(self, locked: nn.Module, restricted: Task) -> dict:
        """Extra record fields the lock measures on its result (none by default)."""
        return {}

    def certify(self, model: nn.Module, record: RestrictedRecord) -> list[Certificate]:
        claim = record.max_accuracy if record.max_accuracy is not None else self.cfg.attack.max_accuracy
        if claim is None:
            raise ValueError(f"{self.name}: no claim recorded; apply the lock first")
        task = self.restricted_task()
        attack = dataclasses.replace(self.cfg.attack, max_accuracy=claim)
        return [
            attack_certificate(
                self.name,
                model,
                task,
                attack,
                self.mechanism,
                {"restricted": self.cfg.restricted, "retain_task": record.retain_task, **self.details(model, record)},
            )
        ]
