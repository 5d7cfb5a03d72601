"""Which modules' outputs a probe reads, and how one output becomes one vector per example.

Shared by the probe attack (`trainlock.attacks.stages.probe`, which reads them without gradients) and the
locks that train against a probe (`trainlock.locks.probing`, which read them with gradients), so that a lock
aims at the same feature sets the attack scores:

    <head>:input   the input of the classification head (`find_head`), caught by a forward pre-hook
    <trunk>.<i>    the output of each direct child of the main trunk: the ModuleList or Sequential with the
                   most direct children, the head (and any child holding it) left out; at most `max_blocks`
                   of them, evenly spaced, the deepest always

`pool` turns an output into (N, D) float: a (N, D) output as it is; (N, L, D) averaged over the real tokens
when an attention mask is given; any other (N, C, ...) averaged over every axis after C.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import find_head

MAX_BLOCKS = 8  # trunk blocks probed at most: each costs a cross-validated fit (an EfficientNet-Lite0 has 16)
LAYERS = ("all", "head")


def spread(blocks: list, n: int | None) -> list:
    """At most `n` of `blocks`, evenly spaced, the last always kept (all of them when n is None or enough)."""
    if n is None or len(blocks) <= n:
        return blocks
    step = len(blocks) / n
    return [blocks[len(blocks) - 1 - int(i * step)] for i in reversed(range(n))]


def trunk(model: nn.Module, head: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the direct children of the model's main trunk (see the module docstring), the head and
    any child holding it left out; [] for a model without a ModuleList or Sequential."""
    best: tuple[str, nn.Module] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.ModuleList, nn.Sequential)) and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        return []
    prefix = f"{best[0]}." if best[0] else ""
    return [
        (prefix + name, child)
        for name, child in best[1].named_children()
        if not any(m is head for m in child.modules())
    ]


def feature_modules(model: nn.Module, layers: str = "all", max_blocks: int | None = MAX_BLOCKS):
    """[(feature set name, module)]: the head first (its *input* is the feature set, read by a pre-hook), then,
    with layers="all", at most `max_blocks` trunk children (their outputs), evenly spaced, the deepest always."""
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")
    head_name, head = find_head(model)
    sets: list[tuple[str, nn.Module]] = [(f"{head_name}:input", head)]
    if layers == "all":
        sets += spread(trunk(model, head), max_blocks)
    return sets


def pool(out, mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """One (N, D) float vector per example from a module's output (a tuple: its first element), None when it
    has no batch dimension of size `n`. Differentiable; the caller detaches when it reads without gradients."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != n:
        return None
    out = out.float()
    if out.ndim == 2:
        return out
    if mask is not None and out.ndim == 3 and out.shape[1] != mask.shape[1]:
        used = mask.any(0).nonzero()  # a text model cut the batch after its longest row (dynamic padding)?
        longest = int(used.max()) + 1 if len(used) else 1
        mask = mask[:, :longest] if out.shape[1] == longest else None
    if mask is not None and out.ndim == 3 and out.shape[1] == mask.shape[1]:  # (N, L, D) over the real tokens
        m = mask.to(out.device, out.dtype).unsqueeze(-1)  # (N, L, 1)
        return (out * m).sum(1) / m.sum(1).clamp(min=1.0)
    return out.flatten(2).mean(2)  # (N, C, ...) -> (N, C)


def is_tokens(x: torch.Tensor) -> bool:
    """Token inputs (N, 3, L): ids, attention mask, token types (the mask is x[:, 1])."""
    return not x.is_floating_point() and x.ndim == 3 and x.shape[1] == 3


__all__ = ["LAYERS", "MAX_BLOCKS", "feature_modules", "is_tokens", "pool", "spread", "trunk"]
