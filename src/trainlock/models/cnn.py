"""`cnn`: a small convolutional network for (C, H, W) images."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn as nn

from .base import MODELS
from .mlp import check_common


class CNN(nn.Module):
    """[Conv3x3 -> ReLU -> MaxPool2x2] per channel width -> Linear `fc` -> ReLU -> Linear `head`.

    `hidden` a list of widths puts an MLP on top: `fc` to the first width, then `mlp` (Linear -> ReLU per
    further width), then `head`; e.g. hidden=[128, 128, 128] is the paper's Appendix C "four-layer MLP on
    top of a two-layer CNN" (four Linear layers counting the head)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int | Sequence[int] = 128,
    ):
        super().__init__()
        shape = check_common("cnn", input_shape, num_classes)
        if len(shape) != 3:
            raise ValueError(f"model 'cnn' needs a 3-D image input_shape (C, H, W), got {tuple(input_shape)!r}")
        channels = [int(c) for c in channels]
        widths = [int(h) for h in hidden] if isinstance(hidden, (list, tuple)) else [int(hidden)]
        if not channels or any(c < 1 for c in channels) or not widths or any(h < 1 for h in widths):
            raise ValueError(
                f"model 'cnn': channels must be non-empty widths >= 1 and hidden >= 1, got {channels!r}, {hidden!r}"
            )
        c, h, w = shape
        min_side = 2 ** len(channels)  # each block halves H and W
        if h < min_side or w < min_side:
            raise ValueError(
                f"model 'cnn' with {len(channels)} pooling blocks needs H and W >= {min_side}, got {shape!r}"
            )
        self.input_shape = shape
        self.num_classes = int(num_classes)
        self.config = {
            "input_shape": list(shape),
            "num_classes": self.num_classes,
            "channels": channels,
            "hidden": widths if isinstance(hidden, (list, tuple)) else widths[0],
        }

        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # dry run to size the first Linear
            flat = self.features(torch.zeros(1, *shape)).numel()
        self.fc = nn.Linear(flat, widths[0])
        self.act = nn.ReLU()
        if len(widths) > 1:  # absent for a single width: state dicts of older models load unchanged
            self.mlp = nn.Sequential(*[m for a, b in itertools.pairwise(widths) for m in (nn.Linear(a, b), nn.ReLU())])
        self.head = nn.Linear(widths[-1], self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, channels[-1], H', W')
        x = self.act(self.fc(x.flatten(1)))  # (B, hidden[0])
        if hasattr(self, "mlp"):
            x = self.mlp(x)  # (B, hidden[-1])
        return self.head(x)  # (B, num_classes)


MODELS.add("cnn", CNN)
