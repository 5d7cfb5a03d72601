"""An example plugin: an attack stage of your own in one file.

    trainlock --plugin examples/plugins/noisy_start.py redteam runs/locked --task fashion-mnist --budget 40

`noisy`: the red team's run starts from the released weights plus seeded Gaussian noise (a start stage). A
plugin's start, data, train and fold stages join the suite's adaptive stage with their registered example.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from trainlock.attacks.stages import AttackState, register_stage
from trainlock.config import option
from trainlock.train import clone_model


@register_stage("start", "noisy", example={"start": "noisy", "options": {"noisy": {"scale": 0.05}}})
@dataclass
class Noisy:
    """The released weights plus Gaussian noise of std `scale` times each tensor's own std."""

    scale: float = option(0.01, "noise std, relative to each tensor's std")
    fresh: ClassVar[bool] = False  # the released weights are kept: transforms apply, recorded locks are watched

    def check(self, state: AttackState) -> str | None:  # optional: why this run cannot go ahead
        return None if self.scale >= 0 else f"scale must be >= 0, got {self.scale}"

    def __call__(self, state: AttackState) -> None:
        state.model = clone_model(state.released)  # never change state.released
        g = torch.Generator().manual_seed(state.seed)
        with torch.no_grad():
            for p in state.model.parameters():
                if p.numel() > 1:
                    p.add_(torch.randn(p.shape, generator=g).to(p) * self.scale * p.std())
