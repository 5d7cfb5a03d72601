"""Compression: pure weight-space operations that confine a model to a bounded, coarse region.

Used by the adaptive attacks (`prune`, `quantize`, `weight-decay-pull` transforms) and reusable by
diagnostics. Every function acts on the lockable weights (`trainlock.locks.find_lockable`: nn.Linear
weights and convolution kernels) unless said otherwise, in place, and returns plain numbers / masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .lockable import find_lockable


def lockable_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every lockable weight."""
    return [(l.name, l.param) for l in find_lockable(model)]


@torch.no_grad()
def magnitude_prune(model: nn.Module, fraction: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Zero the `fraction` of smallest-magnitude weights, in place; returns {name: keep mask (bool)}.

    scope="global": one threshold over all weights together (round(fraction * total) zeros in all);
    scope="layer": round(fraction * numel) zeros in each weight. Ties are broken by position, so the
    counts are exact.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    weights = lockable_weights(model)
    masks: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for name, p in weights:
            k = round(fraction * p.numel())
            keep = torch.ones(p.numel(), dtype=torch.bool, device=p.device)
            keep[torch.argsort(p.detach().abs().flatten(), stable=True)[:k]] = False
            masks[name] = keep.view_as(p)
    else:
        flat = torch.cat([p.detach().abs().flatten().float().cpu() for _, p in weights])
        k = round(fraction * flat.numel())
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat, stable=True)[:k]] = False
        start = 0
        for name, p in weights:
            masks[name] = keep[start : start + p.numel()].view_as(p).to(p.device)
            start += p.numel()
    for name, p in weights:
        p.mul_(masks[name].to(p.dtype))
    return masks


@torch.no_grad()
def quantize(model: nn.Module, bits: int, per_channel: bool = False) -> dict:
    """Symmetric uniform fake-quantization of the weights, in place.

    bits >= 2: w -> scale * clamp(round(w / scale), -q, q) with q = 2^(bits-1) - 1 and
    scale = max|w| / q (per tensor, or per output channel), so at most 2^bits - 1 values per tensor
    (per channel). bits = 1: w -> sign(w) * mean|w| (two values). Returns per-weight stats.
    """
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    stats: dict[str, dict] = {}
    for name, p in lockable_weights(model):
        w = p.detach().double()
        rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
        if bits == 1:
            scale = rows.abs().mean(dim=1, keepdim=True)
            q = torch.where(rows >= 0, 1.0, -1.0) * scale
        else:
            qmax = 2 ** (bits - 1) - 1
            scale = rows.abs().amax(dim=1, keepdim=True) / qmax
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = (rows / safe).round().clamp(-qmax, qmax) * safe
        q = q.reshape(w.shape)
        p.copy_(q.to(p.dtype))
        stats[name] = {
            "scale": float(scale.max()),
            "mse": float((q - w).pow(2).mean()),
            "levels": int(torch.unique(p.detach()).numel()),
        }
    return {"bits": bits, "per_channel": per_channel, "layers": stats}


@torch.no_grad()
def weight_decay_pull(model: nn.Module, factor: float) -> dict:
    """Multiply every weight matrix (every parameter with >= 2 dimensions) by `factor`, in place.

    This is the closed-form effect of pure weight decay: d theta/dt = -lam theta gives
    theta(t) = exp(-lam t) theta(0), i.e. a uniform pull toward the origin by factor = exp(-lam t).
    Returns the squared norm of those parameters before and after.
    """
    if not factor > 0.0:
        raise ValueError(f"factor must be > 0, got {factor}")
    before = after = 0.0
    n = 0
    for _, p in model.named_parameters():
        if p.dim() < 2:
            continue
        before += float(p.detach().double().pow(2).sum())
        p.mul_(factor)
        after += float(p.detach().double().pow(2).sum())
        n += 1
    return {"factor": factor, "tensors": n, "sq_norm_before": before, "sq_norm_after": after}


def sublevel_radius(C: float, lam: float) -> float:
    """Radius of the ball containing the sublevel set {theta : L(theta) + lam ||theta||^2 <= C}.

    If L >= 0 (any loss bounded below by 0: cross-entropy, squared error) and
    L(theta) + lam ||theta||^2 <= C with lam > 0, then lam ||theta||^2 <= C - L(theta) <= C, so
    ||theta|| <= sqrt(C / lam). A fine-tuning run with weight decay lam that keeps its regularized
    objective under C (e.g. under its value at the start, when the optimizer descends) therefore
    never leaves this ball, whatever the lock did to the loss landscape inside it: inflated singular
    values cost lam * sigma^2 and are pulled in like every other direction.
    """
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if C < 0:
        raise ValueError(f"C must be >= 0 (L >= 0 and the penalty is >= 0), got {C}")
    return math.sqrt(C / lam)
