"""`mlp`: a multi-layer perceptron that flattens any input shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from .base import MODELS

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def check_common(name: str, input_shape: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """Validate the arguments every builder shares; return input_shape as a tuple of ints."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"model {name!r}: input_shape must be non-empty positive sizes, got {input_shape!r}")
    if int(num_classes) < 1:
        raise ValueError(f"model {name!r}: num_classes must be >= 1, got {num_classes!r}")
    return shape


class MLP(nn.Module):
    """Flatten -> [Linear -> activation] per hidden width -> Linear `head`."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
    ):
        super().__init__()
        self.input_shape = check_common("mlp", input_shape, num_classes)
        self.num_classes = int(num_classes)
        if activation not in ACTIVATIONS:
            raise ValueError(f"model 'mlp': activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"model 'mlp': hidden widths must be >= 1, got {hidden!r}")
        self.config = {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "hidden": hidden,
            "activation": activation,
        }

        layers: list[nn.Module] = []
        width = math.prod(self.input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, prod(input_shape))
        x = self.body(x)  # (B, hidden[-1])
        return self.head(x)  # (B, num_classes)


MODELS.add("mlp", MLP)
