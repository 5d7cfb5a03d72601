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
    check_kwargs(name, builder, kwargs)
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


def check_kwargs(name: str, builder: ModelBuilder, kwargs: dict) -> None:
    """ValueError naming the key when a keyword's value does not fit the builder's annotation (`hidden: "64"`
    where a list of integers is wanted would otherwise build one layer per character). Keywords the builder
    does not take, and unannotated ones, are left to the call (its TypeError names what it accepts)."""
    import inspect
    import typing

    try:
        params = inspect.signature(builder).parameters
        hints = typing.get_type_hints(builder.__init__ if isinstance(builder, type) else builder)
    except (TypeError, ValueError, NameError):
        return
    for key, value in kwargs.items():
        if key in params and key in hints and not _fits(value, hints[key]):
            raise ValueError(f"model {name!r}: {key} must be {_describe(hints[key])}, got {value!r}")


def _fits(value, tp) -> bool:
    import collections.abc
    import math
    import numbers
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return True
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:  # numpy's integers too (a task's num_classes may be one)
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return len(inner) != 1 or all(_fits(v, inner[0]) for v in value)
    return True


def _describe(tp) -> str:
    import collections.abc
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", type(None): "null"}
    if tp in names:
        return names[tp]
    if origin in (list, tuple, collections.abc.Sequence):
        inner = [a for a in args if a is not Ellipsis]
        if len(inner) == 1 and inner[0] in names:
            return "a list of " + names[inner[0]].split(" ", 1)[1].replace("integer", "integers").replace(
                "number", "numbers"
            ).replace("string", "strings")
        return "a list"
    return getattr(tp, "__name__", str(tp))
