"""`resnet18`: ResNet-18 adapted to small images (3x3 stride-1 stem, no max-pool)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .base import MODELS
from .mlp import check_common


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual connection (1x1 conv+BN shortcut when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, c_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, c_out, H/s, W/s)
        return self.relu(out + self.shortcut(x))  # (B, c_out, H/s, W/s)


class ResNet18(nn.Module):
    """Stem -> 4 stages of 2 BasicBlocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2) -> avg pool -> `head`."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64):
        super().__init__()
        shape = check_common("resnet18", input_shape, num_classes)
        if len(shape) != 3:
            raise ValueError(f"model 'resnet18' needs a 3-D image input_shape (C, H, W), got {tuple(input_shape)!r}")
        if int(width) < 1:
            raise ValueError(f"model 'resnet18': width must be >= 1, got {width!r}")
        width = int(width)
        self.input_shape = shape
        self.num_classes = int(num_classes)
        self.config = {"input_shape": list(shape), "num_classes": self.num_classes, "width": width}

        self.stem = nn.Sequential(
            nn.Conv2d(shape[0], width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        c = width
        for i, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**i
            stages.append(nn.Sequential(BasicBlock(c, out, stride), BasicBlock(out, out)))
            c = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, w, H, W)
        x = self.stages(x)  # (B, 8w, H/8, W/8)
        x = self.pool(x).flatten(1)  # (B, 8w)
        return self.head(x)  # (B, num_classes)


MODELS.add("resnet18", ResNet18)
