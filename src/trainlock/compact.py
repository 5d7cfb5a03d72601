"""Compactification: pure weight-space operations that confine a model to a bounded, coarse region.

Used by the adaptive attacks (`prune`, `quantize`, `weight-decay-pull` transforms) and reusable by
diagnostics. Every function acts on the lockable weights (`trainlock.locks.find_lockable`: nn.Linear
weights and convolution kernels) unless said otherwise, in place, and returns plain numbers / masks.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .locks.lockable import find_lockable


def _weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
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
    weights = _weights(model)
    masks: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for name, p in weights:
            k = int(round(fraction * p.numel()))
            keep = torch.ones(p.numel(), dtype=torch.bool, device=p.device)
            keep[torch.argsort(p.detach().abs().flatten(), stable=True)[:k]] = False
            masks[name] = keep.view_as(p)
    else:
        flat = torch.cat([p.detach().abs().flatten().float().cpu() for _, p in weights])
        k = int(round(fraction * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat, stable=True)[:k]] = False
        start = 0
        for name, p in weights:
            masks[name] = keep[start:start + p.numel()].view_as(p).to(p.device)
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
    for name, p in _weights(model):
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
    if not 0.0 < factor:
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


# ---------------------------------------------------------------- regularization path and report


def _sq_norm(model: nn.Module) -> float:
    """||theta||^2 over every trainable parameter (weights and biases): the penalized vector."""
    return float(sum(p.detach().double().pow(2).sum() for p in model.parameters() if p.requires_grad))


@torch.no_grad()
def _train_loss(model: nn.Module, task) -> float:
    """Mean cross-entropy over the whole training split, in eval mode (L in the objective)."""
    from .training import predict

    logits = predict(model, task.x_train)
    return float(F.cross_entropy(logits.double(), task.y_train))


def regularization_path(model: nn.Module, task, lambdas=(1e-4, 1e-3, 1e-2, 1e-1), steps: int = 100,
                        lr: float = 0.05, batch_size: int = 64, seed: int = 0, device: str = "cpu") -> list[dict]:
    """Train one copy of `model` per penalty strength lam and check the sublevel-set radius bound.

    Each copy minimises J_lam(theta) = L(theta) + lam * ||theta||^2 with plain SGD (momentum 0, no
    optimizer weight decay: the penalty is in the loss, so the bound is about exactly this objective),
    where theta is the vector of ALL trainable parameters (biases included) and L is cross-entropy
    (the mean over a minibatch in the steps; the mean over the whole training split when measured).
    Note: lam * ||theta||^2 has gradient 2 lam theta, so it equals torch weight_decay = 2 lam.

    Per lam the row holds: `norm` = ||theta_end||; `C_start` = J_lam(theta_0) and `C_end` =
    J_lam(theta_end), both with L over the full training split; `bound` = sqrt(C_end / lam);
    `holds` = norm <= bound; `accuracy` = test accuracy of theta_end. Why it holds: L >= 0, so
    lam ||theta_end||^2 <= L(theta_end) + lam ||theta_end||^2 = C_end. The bound is therefore
    guaranteed for the final point (a check of the arithmetic, not of the optimizer). The row also
    gives `bound_start` = sqrt(C_start / lam) and `max_norm`, the largest ||theta|| seen over the
    trajectory; `holds_start` = max_norm <= bound_start is NOT guaranteed: it follows only if every
    iterate kept J_lam <= C_start, which minibatch SGD does not promise (full-batch gradient descent
    with a small enough step would). The input model is not modified.
    """
    from .training import LoopConfig, evaluate, fit

    shape = getattr(model, "input_shape", None)
    task = task.adapt(shape) if shape is not None else task
    per_epoch = math.ceil(len(task.y_train) / batch_size)
    rows = []
    for lam in lambdas:
        lam = float(lam)
        if lam <= 0:
            raise ValueError(f"every lambda must be > 0, got {lam}")
        m = copy.deepcopy(model).to(device)
        m.eval()
        c_start = _train_loss(m, task) + lam * _sq_norm(m)
        peak = [math.sqrt(_sq_norm(m))]

        def loss_fn(mod, xb, yb, lam=lam):
            pen = sum(p.pow(2).sum() for p in mod.parameters() if p.requires_grad)
            return F.cross_entropy(mod(xb), yb) + lam * pen, {}

        def on_step(step, value, extras):
            peak.append(math.sqrt(_sq_norm(m)))

        torch.manual_seed(seed)
        cfg = LoopConfig(optimizer="sgd", lr=lr, momentum=0.0, weight_decay=0.0, batch_size=batch_size, seed=seed,
                         epochs=math.ceil(steps / per_epoch), max_steps=steps, lr_gamma=None, device=device)
        res = fit(m, task, cfg, loss_fn=loss_fn, on_step=on_step, progress=False, desc=f"lam={lam:g}")
        m.eval()
        sq = _sq_norm(m)
        c_end = _train_loss(m, task) + lam * sq
        norm, bound, bound_start = math.sqrt(sq), sublevel_radius(c_end, lam), sublevel_radius(c_start, lam)
        rows.append({
            "lambda": lam, "steps": res.steps, "stopped": res.stopped, "norm": norm, "C_start": c_start,
            "C_end": c_end, "bound": bound, "holds": norm <= bound * (1 + 1e-12), "bound_start": bound_start,
            "max_norm": max(peak), "holds_start": max(peak) <= bound_start, "accuracy": evaluate(m, task),
        })
    return rows


def compaction_report(model: nn.Module, task, fractions=(0.5, 0.8, 0.9), bits=(8, 4, 2),
                      scope: str = "global", per_channel: bool = False) -> dict:
    """Test accuracy of copies of `model` after magnitude pruning and after fake-quantization.

    Pruning rows: requested `fraction`, achieved `sparsity` (zeros / lockable weights, counted after
    pruning, so weights that were already 0 count too), `accuracy`. Quantization rows: `bits`,
    `accuracy`, `levels` = {weight name: distinct values in that tensor} (at most 2^bits - 1 for
    bits >= 2, see `quantize`), `max_levels`. Only the lockable weights change; `model` is untouched.
    """
    from .training import evaluate

    out = {"base_accuracy": evaluate(model, task), "prune": [], "quantize": []}
    for f in fractions:
        m = copy.deepcopy(model)
        magnitude_prune(m, float(f), scope=scope)
        ws = [p.detach() for _, p in _weights(m)]
        zeros, total = sum(int((w == 0).sum()) for w in ws), sum(w.numel() for w in ws)
        out["prune"].append({"fraction": float(f), "sparsity": zeros / max(total, 1), "accuracy": evaluate(m, task)})
    for b in bits:
        m = copy.deepcopy(model)
        q = quantize(m, int(b), per_channel=per_channel)
        levels = {n: s["levels"] for n, s in q["layers"].items()}
        out["quantize"].append({"bits": int(b), "accuracy": evaluate(m, task), "levels": levels,
                                "max_levels": max(levels.values(), default=0)})
    return out
