"""`repnoise`: representation noising in the style of RepNoise (Rosati et al., NeurIPS 2024), written from
the paper's description.

The restricted domain's hidden representations are pushed towards Gaussian noise, so the information a
fine-tuning run would need is no longer in the features, while the authorized task keeps its own:

    loss = CE(retain) + beta * mean_layers MMD(h_l(x_restricted), N(0, I)) - alpha * ICE-ascent(restricted)

h_l are the outputs of every Linear / Conv layer except the classification head (flattened per example);
MMD is the Gaussian-kernel maximum mean discrepancy with bandwidth sqrt(dimension). The ascent term is
written as the bounded inverse cross-entropy -log(1 - p_y) (RepNoise ascends the harmful loss with a small
weight; the bounded form keeps it from diverging). The restricted task's classes are read from the model's
first outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, option
from ..models.base import find_head
from ..train import LoopConfig
from .base import register_lock
from .restricted import RestrictedLock, SimulatedAttack, fit_logits, inverse_ce


@dataclass
class RepNoiseConfig:
    restricted: str | None = option(None, "the restricted task (a task name) whose representations are noised")
    loop: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="adam", lr=1e-4, epochs=1),
        help="the loop, over the authorized task's training split",
    )
    alpha: float = option(1.0, "weight of the (bounded) ascent on the restricted task's loss")
    beta: float = option(1.0, "weight of the noise term: MMD between restricted representations and N(0, I)")
    attack: SimulatedAttack = option(factory=SimulatedAttack, help="the certificate's simulated attack")

    def __post_init__(self):
        check_float("repnoise", "alpha", self.alpha, 0.0)
        check_float("repnoise", "beta", self.beta, 0.0)


def gaussian_mmd(h: torch.Tensor, seed_gen: torch.Generator | None = None) -> torch.Tensor:
    """Squared MMD between the rows of `h` (B, D) and as many N(0, I) samples, Gaussian kernel with
    bandwidth sqrt(D) (the biased estimator: always >= 0)."""
    h = h.float()
    z = torch.randn(h.shape, generator=seed_gen).to(h.device)
    scale = 2.0 * h.shape[1]

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / scale)

    return k(h, h).mean() + k(z, z).mean() - 2 * k(h, z).mean()


def hidden_layers(model: nn.Module) -> list[nn.Module]:
    """Every Linear / Conv2d module except the classification head."""
    try:
        _, head = find_head(model)
    except ValueError:
        head = None
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head]


@register_lock(
    "repnoise",
    RepNoiseConfig,
    example={
        "restricted": "digits-permuted-1",
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
        "attack": {"steps": 5, "max_accuracy": 1.0},
    },
)
class RepNoiseLock(RestrictedLock):
    """RepNoise-style representation noising; certifies one simulated fine-tuning attack's end accuracy."""

    mechanism = (
        "representation noising: the restricted domain's hidden representations were pushed towards "
        "Gaussian noise, so fine-tuning must rebuild them"
    )

    def objective(self, locked, restricted, stream):
        layers = hidden_layers(locked)
        if not layers:
            raise ValueError("repnoise: the model has no hidden Linear / Conv2d layer to noise")
        captured: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda mod, inp, out: captured.append(out.flatten(1))) for m in layers]
        gen = torch.Generator().manual_seed(self.cfg.loop.seed)
        sums = {"mmd": 0.0, "retain_loss": 0.0, "n": 0}

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            captured.clear()
            xr, yr = next(stream)
            logits_r = fit_logits(m(xr), restricted, "repnoise")
            mmd = torch.stack([gaussian_mmd(h, gen) for h in captured]).mean()
            captured.clear()
            ce = F.cross_entropy(m(x), y)
            captured.clear()
            sums["mmd"] += float(mmd.detach())
            sums["retain_loss"] += float(ce.detach())
            sums["n"] += 1
            return ce + self.cfg.beta * mmd + self.cfg.alpha * inverse_ce(logits_r, yr), {}

        def cleanup():
            for h in handles:
                h.remove()

        return loss_fn, sums, cleanup

    def details(self, model, record) -> dict:
        return {"alpha": self.cfg.alpha, "beta": self.cfg.beta}
