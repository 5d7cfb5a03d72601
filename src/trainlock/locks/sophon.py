"""`sophon`: non-fine-tunable learning in the style of SOPHON (Deng et al., IEEE S&P 2024), written from the
paper's description.

Each step interleaves two objectives. Fine-tuning suppression: simulate `inner_steps` steps of SGD
fine-tuning on restricted-domain batches (MAML-style, first-order: the suppression loss's gradient at each
simulated point is applied to the released weights), scoring each point with the inverse cross-entropy
-log(1 - p_y) (or KL to the uniform prediction, `suppression: klu`) so that the weights sit where
fine-tuning on the restricted domain keeps failing. Normal training reinforcement: cross-entropy on the
authorized task.

    loss = alpha * mean_k suppression(theta_k; restricted) + (1 - alpha) * CE(theta; retain)
    theta_0 = theta, theta_{k+1} = theta_k - inner_lr * grad CE(theta_k; restricted batch k)

The first-order gradient (no second derivatives through the inner loop) is carried into the loop as the
surrogate sum_p <p, g_p>, whose gradient is g_p. BatchNorm statistics are frozen during the simulation.
Differences from the paper: one simulated optimizer (SGD, or Adam with `inner_optimizer: adam`, our variant
aimed at Adam, the optimizer that undoes SpecDef) rather than a mix, and a fixed inner rate.
The restricted task's classes are read from the model's first outputs (its head is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..config import check_float, check_int, option
from ..tasks import Task
from ..train import LoopConfig
from .base import register_lock
from .restricted import RestrictedLock, SimulatedAttack, fit_logits, inverse_ce, kl_uniform

SUPPRESSIONS = ("ice", "klu")
INNER_OPTIMIZERS = ("sgd", "adam")


@dataclass
class SophonConfig:
    restricted: str | None = option(None, "the restricted task (a task name): fine-tuning on it must fail")
    loop: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="adam", lr=1e-4, epochs=1),
        help="the outer loop, over the authorized task's training split",
    )
    alpha: float = option(0.5, "weight of fine-tuning suppression; 1 - alpha weighs the authorized loss")
    inner_steps: int = option(3, "simulated fine-tuning steps per outer step")
    inner_lr: float = option(1e-2, "learning rate of the simulated fine-tuning")
    inner_optimizer: str = option(
        "sgd",
        "the simulated fine-tuning's optimizer: sgd, or adam (our variant: Adam's "
        "per-coordinate scaling is what undoes SpecDef, so simulate it)",
        choices=lambda: INNER_OPTIMIZERS,
    )
    suppression: str = option(
        "ice", "ice: inverse cross-entropy -log(1 - p_y); klu: KL to uniform", choices=lambda: SUPPRESSIONS
    )
    attack: SimulatedAttack = option(factory=SimulatedAttack, help="the certificate's simulated attack")

    def __post_init__(self):
        check_float("sophon", "alpha", self.alpha, 0.0, 1.0)
        check_int("sophon", "inner_steps", self.inner_steps, 0)
        check_float("sophon", "inner_lr", self.inner_lr, 0.0, open_low=True)
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"sophon: inner_optimizer must be one of {INNER_OPTIMIZERS}, got {self.inner_optimizer!r}")
        if self.suppression not in SUPPRESSIONS:
            raise ValueError(f"sophon: suppression must be one of {SUPPRESSIONS}, got {self.suppression!r}")


def suppression_gradients(model: nn.Module, batches, cfg: SophonConfig, task: Task, head=None) -> tuple[list, float]:
    """First-order gradients of the mean suppression loss over the simulated fine-tuning trajectory, one
    tensor per parameter of `model` (in named_parameters order), and that mean loss.

    `head`: None, the simulated adversary fine-tunes the model's own first outputs (its head is kept); else a
    feature tap on the head's input (`trainlock.locks.probing.FeatureTap(model, "head")`): the adversary puts a
    freshly initialized linear head of the task's classes on those features (nn.Linear's initialization, from
    torch's generator) and fine-tunes it with the trunk, as an attacker with a new task does; the released
    head then gets no gradient."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if p.requires_grad}
    acc = [torch.zeros_like(params[n]) for n in names]
    moments = {n: (torch.zeros_like(params[n]), torch.zeros_like(params[n])) for n in names}
    fresh: dict[str, torch.Tensor] = {}  # the fresh head's weight and bias, and their Adam moments
    fresh_moments: dict[str, tuple] = {}
    total = 0.0
    was_training = model.training
    model.eval()  # simulated steps do not move BatchNorm statistics

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        if head is None:
            return fit_logits(functional_call(model, params, (x,)), task, "sophon")
        _, feats = head.read(lambda inp: functional_call(model, params, (inp,)), x)
        if not feats:
            raise ValueError("sophon: the head's input could not be read as (N, D) features")
        f = next(iter(feats.values()))
        if not fresh:
            lin = nn.Linear(f.shape[1], task.num_classes)
            fresh.update(weight=lin.weight.detach().to(f.device), bias=lin.bias.detach().to(f.device))
            for k in ("weight", "bias"):
                fresh[k].requires_grad_(True)
                fresh_moments[k] = (torch.zeros_like(fresh[k]), torch.zeros_like(fresh[k]))
        return F.linear(f, fresh["weight"], fresh["bias"])

    try:
        for k in range(cfg.inner_steps + 1):
            x, y = next(batches)
            logits = logits_of(x)
            sup = inverse_ce(logits, y) if cfg.suppression == "ice" else kl_uniform(logits)
            last = k == cfg.inner_steps
            g_sup = torch.autograd.grad(sup, [params[n] for n in names], retain_graph=not last, allow_unused=True)
            for a, g in zip(acc, g_sup, strict=False):
                if g is not None:
                    a.add_(g)
            total += float(sup.detach())
            if not last:
                ft = F.cross_entropy(logits, y)
                heads = list(fresh)
                grads = torch.autograd.grad(
                    ft, [params[n] for n in names] + [fresh[h] for h in heads], allow_unused=True
                )
                g_ft, g_head = grads[: len(names)], grads[len(names) :]
                params = {
                    n: (params[n] - cfg.inner_lr * _direction(cfg, moments[n], g, k) if g is not None else params[n])
                    .detach()
                    .requires_grad_(True)
                    for n, g in zip(names, g_ft, strict=False)
                }
                for h, g in zip(heads, g_head, strict=True):
                    step = cfg.inner_lr * _direction(cfg, fresh_moments[h], g, k)
                    fresh[h] = (fresh[h] - step).detach().requires_grad_(True)
    finally:
        model.train(was_training)
    n = cfg.inner_steps + 1
    return [a / n for a in acc], total / n


def _direction(cfg: SophonConfig, moments: tuple, g: torch.Tensor, k: int) -> torch.Tensor:
    """The simulated step's direction: the gradient (sgd), or Adam's bias-corrected m / (sqrt(v) + eps)
    with betas (0.9, 0.999), its moments carried across the inner steps in `moments` (updated in place)."""
    if cfg.inner_optimizer == "sgd":
        return g
    m, v = moments
    m.mul_(0.9).add_(g.detach(), alpha=0.1)
    v.mul_(0.999).addcmul_(g.detach(), g.detach(), value=0.001)
    mh, vh = m / (1 - 0.9 ** (k + 1)), v / (1 - 0.999 ** (k + 1))
    return mh / (vh.sqrt() + 1e-8)


@register_lock(
    "sophon",
    SophonConfig,
    example={
        "restricted": "digits-permuted-1",
        "inner_steps": 1,
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
        "attack": {"steps": 5, "max_accuracy": 1.0},
    },
)
class SophonLock(RestrictedLock):
    """SOPHON-style fine-tuning suppression; certifies one simulated fine-tuning attack's end accuracy."""

    mechanism = (
        "fine-tuning suppression: the weights were trained so that simulated fine-tuning on the restricted "
        "domain keeps predicting it badly"
    )

    def objective(self, locked, restricted, stream):
        sums = {"suppression": 0.0, "retain_loss": 0.0, "n": 0}

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            grads, sup = suppression_gradients(m, stream, self.cfg, restricted)
            params = [p for p in m.parameters() if p.requires_grad]
            surrogate = sum((p * g.to(p.dtype)).sum() for p, g in zip(params, grads, strict=False))
            ce = F.cross_entropy(m(x), y)
            sums["suppression"] += sup
            sums["retain_loss"] += float(ce.detach())
            sums["n"] += 1
            return self.cfg.alpha * surrogate + (1.0 - self.cfg.alpha) * ce, {}

        return loss_fn, sums, None

    def details(self, model, record) -> dict:
        return {
            "alpha": self.cfg.alpha,
            "inner_steps": self.cfg.inner_steps,
            "inner_lr": self.cfg.inner_lr,
            "inner_optimizer": self.cfg.inner_optimizer,
        }
