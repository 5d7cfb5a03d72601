"""The distillation attack: copy the released model's function into fresh weights, then fine-tune those.

A lock that keeps the model's function (the retain loss is what keeps it) cannot stop this: a
student (the same architecture re-initialized, or a named smaller model) is trained to match the
locked model's logits, KL(softmax(teacher / T) || softmax(student / T)) * T^2, on inputs the attacker
has, and is then fine-tuned on the unauthorized task. The student's weights never carried the lock's
spectrum, so whatever the released function knows transfers without the lock's conditioning.

Inputs: `task` (the attack task's training inputs, unlabeled: the default), `noise` (Gaussian inputs
of the task's shape; image and vector models only), or the name of another task whose training
inputs are used. The distillation steps count toward the attack's cost and are reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, check_int, option, to_dict
from ..tasks import Task, as_task, for_model
from ..train import LoopConfig, clone_model, fit, predict, resolve_device
from .scratch import reinitialized


@dataclass
class DistillConfig:
    """How the attacker distills the released model into fresh weights before fine-tuning."""

    steps: int = option(500, "distillation steps (counted in the attack's cost)")
    temperature: float = option(2.0, "softmax temperature T of the distillation KL (scaled by T^2)")
    inputs: str = option(
        "task",
        "task: the attack task's training inputs (unlabeled); noise: Gaussian inputs "
        "(images and vectors only); or another task's name, whose inputs are used",
    )
    optimizer: str = option("adam", "the student's optimizer")
    lr: float = option(3e-3, "the student's learning rate")
    batch_size: int = option(64, "minibatch size")
    student: str | None = option(
        None,
        "a registered model name for a smaller student (images and vectors; "
        "default: the released architecture re-initialized)",
    )
    noise_samples: int = option(4096, "inputs drawn for noise distillation")
    seed: int = option(0, "student initialization and data order")

    def __post_init__(self):
        check_int("distill", "steps", self.steps, 1)
        check_int("distill", "batch_size", self.batch_size, 1)
        check_int("distill", "noise_samples", self.noise_samples, 1)
        check_float("distill", "temperature", self.temperature, 0.0, open_low=True)
        check_float("distill", "lr", self.lr, 0.0, open_low=True)

    def to_dict(self) -> dict:
        return to_dict(self)


def _inputs(teacher: nn.Module, cfg: DistillConfig, task: Task) -> torch.Tensor:
    if cfg.inputs == "task":
        return for_model(task, teacher).x_train
    if cfg.inputs == "noise":
        x = for_model(task, teacher).x_train
        if not x.is_floating_point():
            raise ValueError(
                "distill: noise inputs are for image and vector models; a text model needs real "
                "text (inputs='task' or another task's name)"
            )
        g = torch.Generator().manual_seed(cfg.seed)
        return torch.randn((cfg.noise_samples, *x.shape[1:]), generator=g) * x.std() + x.mean()
    return for_model(as_task(cfg.inputs, "distill inputs"), teacher).x_train


def _student(teacher: nn.Module, cfg: DistillConfig, n_out: int, x: torch.Tensor) -> nn.Module:
    if cfg.student is None:
        return reinitialized(teacher, cfg.seed)
    from ..models import build

    torch.manual_seed(cfg.seed)
    return build(cfg.student, input_shape=list(x.shape[1:]), num_classes=n_out)


def distill(
    teacher: nn.Module, cfg: DistillConfig, task: Task, device: str = "cpu", progress: bool = False
) -> tuple[nn.Module, dict]:
    """A fresh student trained to match `teacher`'s logits on the attacker's inputs for `task`.

    Returns (student, info) with info = {"steps", "kl_before", "kl_after" (mean KL at T=1 on the task's
    test inputs, teacher || student), "agreement" (argmax agreement there), "kl_on_inputs" (the same KL on
    the distillation inputs: how well the student fit what it saw), "wall_s"}.
    """
    t0 = time.perf_counter()
    teacher = clone_model(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = _inputs(teacher, cfg, task)
    dev = resolve_device(device)
    teacher.to(dev)
    targets = predict(teacher, x)
    student = _student(teacher, cfg, targets.shape[1], x).to(dev)
    for p in student.parameters():  # a copy of the frozen teacher's architecture
        p.requires_grad_(True)
    held = for_model(task, teacher).x_test

    def kl_agree(inputs: torch.Tensor) -> tuple[float, float]:
        p, q = predict(teacher, inputs), predict(student, inputs)
        kl = F.kl_div(F.log_softmax(q, 1), F.log_softmax(p, 1), log_target=True, reduction="batchmean")
        return float(kl), float((p.argmax(1) == q.argmax(1)).float().mean())

    kl_before, _ = kl_agree(held)
    T = cfg.temperature
    # the student learns logits, not labels: the targets ride in the y slot of a Task the loop batches
    soft = Task(
        name=f"distill:{task.name}",
        x_train=x,
        y_train=torch.arange(len(x)),
        x_test=x[:1],
        y_test=torch.zeros(1, dtype=torch.long),
        num_classes=targets.shape[1],
        meta={"text": True} if not x.is_floating_point() else {},
    )

    def loss_fn(m: nn.Module, xb: torch.Tensor, idx: torch.Tensor):
        tgt = targets[idx.cpu()].to(xb.device)
        out = F.kl_div(F.log_softmax(m(xb) / T, 1), F.log_softmax(tgt / T, 1), log_target=True, reduction="batchmean")
        return out * T * T, {}

    epochs = math.ceil(cfg.steps / math.ceil(len(x) / cfg.batch_size))
    loop = LoopConfig(
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        epochs=epochs,
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
    )
    res = fit(student, soft, loop, loss_fn, desc="distill", progress=progress)
    kl_after, agree = kl_agree(held)
    kl_fit, _ = kl_agree(x[:4096])
    return student, {
        "steps": res.steps,
        "kl_before": kl_before,
        "kl_after": kl_after,
        "agreement": agree,
        "kl_on_inputs": kl_fit,
        "stopped": res.stopped,
        "wall_s": time.perf_counter() - t0,
    }
