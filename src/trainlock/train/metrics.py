"""Evaluation: logits in chunks, top-1 accuracy, test accuracy of a model on a task."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..tasks import Task


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, C) in eval mode, computed in chunks; restores the model's training mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in [0, 1]; a non-finite logit row counts as wrong."""
    logits = predict(model, x, batch_size)
    ok = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
    return float(ok.float().mean())


def evaluate(model: nn.Module, task: Task) -> float:
    """Test accuracy of `model` on `task` (inputs adapted to the model's input shape if it has one)."""
    shape = getattr(model, "input_shape", None)
    task = task.adapt(shape) if shape is not None else task
    return accuracy(model, task.x_test, task.y_test)
