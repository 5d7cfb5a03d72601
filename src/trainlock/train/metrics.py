"""Evaluation: logits in chunks, top-1 accuracy, test accuracy of a model on a task."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..tasks import Task, as_task, for_model


def eval_batch_size(x: torch.Tensor, device: torch.device | str = "cpu") -> int:
    """Inputs per forward pass in evaluation: 64 token sequences; images 1024 on a GPU and 32 on a CPU, where
    large batches are slower: their activations fall out of cache (500 images through EfficientNet-Lite0 at 96 px
    on 2 cores: 1.6 s in batches of 32, 2.5 s of 128, 4.6-5.1 s of 1024; the small MNIST CNN 0.65-0.70 s / 0.84 s for
    32 / 1024 on 5,000 images; notes/speed.md)."""
    if not x.is_floating_point():
        return 64
    return 1024 if torch.device(device).type == "cuda" else 32


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits (N, C) in eval mode, computed in chunks (default `eval_batch_size`: 32 images on a CPU, 1024 on a GPU,
    64 token sequences, whose activations are sequence-length times larger); restores the model's training mode.
    Token sequences are chunked longest first (a text model cuts each chunk to its longest row), the logits returned
    in `x`'s order."""
    from .loop import token_lengths

    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = eval_batch_size(x, device)
    lengths = token_lengths(x) if len(x) > batch_size else None
    order = None if lengths is None else torch.argsort(lengths, descending=True, stable=True)
    xs = x if order is None else x[order]
    was_training = model.training
    model.eval()
    out = [model(xs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(xs), batch_size)]
    model.train(was_training)
    logits = torch.cat(out)
    if order is not None:
        logits = logits[torch.argsort(order)]
    return logits


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Top-1 accuracy in [0, 1]; a non-finite logit row counts as wrong."""
    logits = predict(model, x, batch_size)
    ok = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
    return float(ok.float().mean())


def evaluate(model: nn.Module, task: Task | str) -> float:
    """Test accuracy of `model` on `task` (a Task or its name; inputs adapted to the model's input shape
    if it has one). Labels the model cannot output are refused, not scored as wrong."""
    task = as_task(task)
    task = for_model(task, model)
    if len(task.y_test):
        n_out = predict(model, task.x_test[:1]).shape[1]
        top = int(task.y_test.max())
        if top >= n_out:
            raise ValueError(
                f"task {task.name!r} has labels up to {top} but the model outputs {n_out} classes; "
                f"its accuracy would be meaningless. Evaluate it on a task with the model's labels, "
                f"or fine-tune it first (trainlock attack gives it a fresh head)"
            )
    return accuracy(model, task.x_test, task.y_test)
