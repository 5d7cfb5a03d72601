"""BatchNorm running statistics recomputed from clean inputs.

A network whose weights were moved away from the ones its BatchNorm statistics were collected under (an
interpolation with a fresh initialization, a distillation on augmented or mixed-up batches, a BatchNorm with
a small momentum such as the TensorFlow-style 0.01 of EfficientNet) scores in eval mode with statistics that
no longer describe its activations: train-mode loss falls while eval-mode accuracy is chance. The fix is the
one SWA uses (Izmailov et al. 2018, `torch.optim.swa_utils.update_bn`): reset each BatchNorm's running mean
and variance and recompute them as a cumulative average (momentum None) over a pass of the inputs in train
mode, no gradient, nothing else changed (torch's `update_bn` does the pass).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim.swa_utils import update_bn


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> int:
    """Recompute every BatchNorm's running mean and variance of `model` (in place) as the average over `x`'s
    batches of `batch_size` rows in train mode; parameters, other buffers and the training mode are left as
    they were. Returns how many BatchNorm layers were recalibrated (0: nothing done, `x` not read)."""
    layers = batchnorms(model)
    if not layers:
        return 0
    if batch_size < 2:
        raise ValueError(f"recalibrate_batchnorm: batch_size must be >= 2 (batch statistics), got {batch_size}")
    if len(x) < 2:
        raise ValueError(f"recalibrate_batchnorm: needs at least 2 inputs, got {len(x)}")
    device = next(model.parameters()).device
    chunks = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    update_bn((c for c in chunks if len(c) >= 2), model, device)  # a 1-row tail has no batch variance
    return len(layers)
