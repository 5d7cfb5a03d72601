"""The model registry. A builder takes `input_shape`, `num_classes` and size keywords, returns an nn.Module.

Every built-in model names its final classifier `head` (an nn.Linear), so attacks can swap it;
locks and attacks never rely on that for other modules (see `trainlock.models.find_head`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered model: `build("cnn", input_shape=(1, 28, 28), num_classes=10)`; `hf:DIR` builds a
    Hugging Face classifier from a local directory."""
    if isinstance(name, str) and name.startswith("hf:"):
        from .hf import from_directory

        kwargs.pop("input_shape", None)
        return from_directory(name[3:], **kwargs)
    builder = MODELS.get(name)
    try:
        return builder(**kwargs)
    except TypeError as e:  # a bad keyword: say which model and what it accepts
        import inspect

        params = ", ".join(inspect.signature(builder).parameters)
        raise ValueError(f"model {name!r}: {e}; it accepts: {params}") from None


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier layer: `model.head` if it is a Linear, else the last nn.Linear in module order."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (name, mod)
    if last is None:
        raise ValueError("model has no nn.Linear layer to use as a classifier head")
    return last


def replace_head(model: nn.Module, num_classes: int, seed: int | None = None) -> nn.Module:
    """Swap the classifier for a freshly initialised Linear with `num_classes` outputs (in place)."""
    import torch

    name, old = find_head(model)
    if seed is not None:
        torch.manual_seed(seed)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent = model
    *path, leaf = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, new)
    return model


def pooled_features(model: nn.Module, x, batch_size: int = 256):
    """What the classifier head (`find_head`) reads for each row of `x`: (N, head.in_features) float32 on the CPU.

    For probes and feature caches: the head's input is caught by a forward pre-hook, so any model whose
    head `find_head` finds works (for the image models, the pooled trunk features). Runs in eval mode without
    gradients, `batch_size` rows at a time on the model's device (under any autocast the caller set); the
    model's training mode is restored."""
    import torch

    if int(batch_size) < 1:
        raise ValueError(f"pooled_features: batch_size must be >= 1, got {batch_size!r}")
    _, head = find_head(model)
    caught: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _mod, args: caught.append(args[0].detach()))
    device = next(model.parameters()).device
    was = model.training
    out = []
    try:
        model.eval()
        with torch.no_grad():
            for i in range(0, len(x), int(batch_size)):
                caught.clear()
                model(x[i : i + int(batch_size)].to(device))
                if len(caught) != 1:
                    raise ValueError(f"pooled_features: the head ran {len(caught)} times in one forward pass, not once")
                out.append(caught[0].flatten(1).float().cpu())  # (b, head.in_features)
    finally:
        handle.remove()
        model.train(was)
    return torch.cat(out) if out else torch.empty(0, head.in_features)
