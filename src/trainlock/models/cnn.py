"""`cnn`: a small convolutional network for (C, H, W) images."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import MODELS
from .mlp import check_common


class CNN(nn.Module):
    """[Conv3x3 -> ReLU -> MaxPool2x2] per channel width -> Linear `fc` -> ReLU -> Linear `head`."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 128,
    ):
        super().__init__()
        shape = check_common("cnn", input_shape, num_classes)
        if len(shape) != 3:
            raise ValueError(f"model 'cnn' needs a 3-D image input_shape (C, H, W), got {tuple(input_shape)!r}")
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels) or int(hidden) < 1:
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
        self.config = dict(input_shape=list(shape), num_classes=self.num_classes, channels=channels, hidden=int(hidden))

        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # dry run to size the first Linear
            flat = self.features(torch.zeros(1, *shape)).numel()
        self.fc = nn.Linear(flat, int(hidden))
        self.act = nn.ReLU()
        self.head = nn.Linear(int(hidden), self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, channels[-1], H', W')
        x = self.act(self.fc(x.flatten(1)))  # (B, hidden)
        return self.head(x)  # (B, num_classes)


MODELS.add("cnn", CNN)
