"""The paper's text setting (Appendix B.2), shared by Table 1 (text) and Figure 3: a pretrained model
fine-tuned on the authorized pair task, locked with SpecDef (alpha 0.99, top-k 2, task loss + KL to the
original as the retain loss), then attacked with AdamW 5e-5, weight decay 0.01, a linear schedule without
warm-up, batch 8, at most 5,000 training examples.

GLUE is not offline; BIG-bench sentence-pair tasks stand in, named as such: the lock is set on the MRPC
stand-in and the attacks run on the other three.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import models, tasks
from ...api import lock
from ...attacks.backdoor import macro_f1
from ...locks import SpecDefConfig
from ...tasks import for_model
from ...train import LoopConfig, evaluate, fit
from .common import Study

# the paper's GLUE task -> (offline stand-in, what it is)
STAND_INS = {
    "MRPC": ("bb-movie-dialog", "BIG-bench movie dialog same/different speaker (binary, as MRPC)"),
    "RTE": ("bb-epistemic", "BIG-bench epistemic reasoning, entailment (binary, as RTE)"),
    "QQP": ("bb-vitaminc", "BIG-bench VitaminC claim/evidence (3 classes; QQP has 2)"),
    "QNLI": ("bb-presuppositions", "BIG-bench presuppositions as NLI (3 classes; QNLI has 2)"),
}
AUTHORIZED = "MRPC"
ATTACKED = ("RTE", "QQP", "QNLI")
F1_TASKS = ("MRPC", "QQP")  # the paper reports F1 for these, accuracy for the others


@dataclass
class TextSettings:
    model: str
    max_length: int
    n_train: int  # at most this many training examples per task (the paper: 5,000)
    auth_train: int  # examples of the authorized task the base is fine-tuned on (then locked on n_train of them)
    n_test: int | None
    train_epochs: int  # fine-tuning the authorized base
    lock_epochs: int  # the paper: 10
    lock_lr: float
    attack_epochs: int  # the paper: 3
    seeds: tuple[int, ...]  # the paper: 3

    def key(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("attack_epochs", "seeds")}


def text_settings(quick: bool, model: str = "minilm-l6") -> TextSettings:
    if quick:
        return TextSettings(
            model=model,
            max_length=96,
            n_train=320,
            auth_train=2000,
            n_test=200,
            train_epochs=1,
            lock_epochs=1,
            lock_lr=5e-5,
            attack_epochs=1,
            seeds=(0,),
        )
    return TextSettings(
        model=model,
        max_length=128,
        n_train=5000,
        auth_train=5000,
        n_test=None,
        train_epochs=3,
        lock_epochs=10,
        lock_lr=5e-5,
        attack_epochs=3,
        seeds=(0, 1, 2),
    )


def task_for(role: str, s: TextSettings):
    return tasks.get(STAND_INS[role][0]).subset(s.n_train, s.n_test)


def attack_loop(s: TextSettings, lr: float, seed: int, device: str) -> LoopConfig:
    return LoopConfig(
        optimizer="adamw",
        lr=lr,
        epochs=s.attack_epochs,
        batch_size=8,
        weight_decay=0.01,
        schedule="linear",
        seed=seed,
        device=device,
    )


def base_and_locked(study: Study, s: TextSettings, progress: bool = False):
    """((base, base_meta), (locked, locked_meta)): cached beside the study (shared with other reproductions)."""
    auth = task_for(AUTHORIZED, s)
    auth_full = tasks.get(STAND_INS[AUTHORIZED][0]).subset(s.auth_train, s.n_test)
    device = study.device
    loop = LoopConfig(
        optimizer="adamw",
        lr=5e-5,
        epochs=s.train_epochs,
        batch_size=8,
        weight_decay=0.01,
        schedule="linear",
        device=device,
    )

    def build_base():
        torch.manual_seed(0)
        m = models.build(s.model, num_classes=auth.num_classes, max_length=s.max_length)
        fit(m, for_model(auth_full, m), loop, progress=progress, desc=f"train {s.model} on {auth.name}")
        return m, {"task": auth.name, "metrics": scores(m, auth)}

    base = study.model(f"{s.model}-base", build_base, shared=s.key())

    def build_locked():
        lock_loop = LoopConfig(
            optimizer="adamw",
            lr=s.lock_lr,
            epochs=s.lock_epochs,
            batch_size=8,
            weight_decay=0.0,
            schedule="linear",
            device=device,
        )
        res = lock(
            base[0], SpecDefConfig(loop=lock_loop, alpha=0.99, top_k=2, retain="ce+kl"), retain=auth, progress=progress
        )
        return res.model, {"task": auth.name, "metrics": scores(res.model, auth), **res.record}

    locked = study.model(f"{s.model}-locked", build_locked, shared=s.key())
    return base, locked


def scores(model, task) -> dict:
    """Accuracy and macro-F1 on the test split."""
    t = for_model(task, model)
    return {"accuracy": evaluate(model, t), "f1": macro_f1(model, t.x_test, t.y_test)}
