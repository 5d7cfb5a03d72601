"""`norm-absorb`: let a normalization layer absorb the scale of the weight that feeds it.

A Linear/Conv whose output goes straight into a BatchNorm is scale-free per output channel: the
norm divides by the channel's standard deviation. So divide each output channel's weight (and bias)
by c_i, chosen to bring the channel's weight norm to the median channel norm (`target="median"`,
default) or to 1 (`target="unit"`), and fix the BatchNorm so eval-mode outputs are unchanged:

    running_mean' = running_mean / c
    running_var'  = (running_var + eps) / c^2 - eps        (so sqrt(var' + eps) = sqrt(var + eps) / c, exactly)

When that would be negative (c^2 > (var + eps) / eps) the variance is set to 0 and the BatchNorm
weight absorbs the rest (gamma' = gamma * c * sqrt(eps) / sqrt(var + eps)): still exact in eval.
A SpecDef-inflated top singular direction is mostly a few heavy rows or a uniformly blown-up
matrix; equalizing the channel norms removes what the BatchNorm was hiding anyway.

Linear -> LayerNorm (normalized over the Linear's output features): LayerNorm is invariant only to
a positive *scalar* scale of its input (a per-feature scale changes its mean and variance), so one
factor c per layer, the one that brings the median row norm to 1. LN(x / c) with eps equals LN(x)
with eps * c^2; with `adjust_eps=True` (default) the LayerNorm's eps is set to eps / c^2, which
makes the transform exact; with `adjust_eps=False` it is function-preserving only up to the eps
term (relative error about eps * (c^2 - 1) / (2 var)).
Train-mode BatchNorm (batch statistics) is likewise invariant only up to eps.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import BATCHNORM, NormPair, norm_pairs, sigma_max_by_layer, sigma_stats, weight_matrix

TARGETS = ("median", "unit")


@torch.no_grad()
def _scale_layer(layer: nn.Module, c: torch.Tensor) -> None:
    shape = [-1] + [1] * (layer.weight.dim() - 1)
    layer.weight.div_(c.to(layer.weight.dtype).reshape(shape))
    if layer.bias is not None:
        layer.bias.div_(c.to(layer.bias.dtype))


@torch.no_grad()
def _absorb_bn(pair: NormPair, target: str) -> dict:
    bn = pair.norm
    rows = torch.linalg.vector_norm(weight_matrix(pair.layer).detach().double(), dim=1)
    goal = rows.median() if target == "median" else torch.tensor(1.0, dtype=torch.float64)
    ok = (rows > 0) & torch.isfinite(rows)
    c = torch.ones_like(rows)
    if goal > 0:
        c[ok] = rows[ok] / goal
    _scale_layer(pair.layer, c)
    clamped = 0
    if bn.running_var is not None:
        eps = bn.eps
        var = bn.running_var.double()
        bn.running_mean.copy_((bn.running_mean.double() / c).to(bn.running_mean.dtype))
        new_var = (var + eps) / c**2 - eps
        low = new_var < 0
        clamped = int(low.sum())
        if clamped:
            fix = c * torch.sqrt(torch.tensor(eps, dtype=torch.float64)) / torch.sqrt(var + eps)
            if bn.affine:
                bn.weight[low] *= fix[low].to(bn.weight.dtype)
            new_var = new_var.clamp_min(0.0)
        bn.running_var.copy_(new_var.to(bn.running_var.dtype))
    return {
        "kind": "batchnorm",
        "c_min": float(c.min()),
        "c_max": float(c.max()),
        "var_clamped": clamped,
        "exact": bn.running_var is not None and (clamped == 0 or bn.affine),
    }


@torch.no_grad()
def _absorb_ln(pair: NormPair, adjust_eps: bool) -> dict:
    rows = torch.linalg.vector_norm(weight_matrix(pair.layer).detach().double(), dim=1)
    med = float(rows.median())
    c = med if med > 0 and torch.isfinite(rows).all() else 1.0
    _scale_layer(pair.layer, torch.tensor(c, dtype=torch.float64).expand(rows.shape[0]))
    if adjust_eps:
        pair.norm.eps = pair.norm.eps / c**2
    return {"kind": "layernorm", "c": c, "eps": pair.norm.eps, "exact": adjust_eps}


def _ln_ok(pair: NormPair) -> bool:
    out = weight_matrix(pair.layer).shape[0]
    return isinstance(pair.layer, nn.Linear) and tuple(pair.norm.normalized_shape) == (out,)


class NormAbsorb:
    """Factory options: target ("median" | "unit") for BatchNorm pairs, adjust_eps for LayerNorm pairs."""

    function_preserving = True

    def __init__(self, target: str = "median", adjust_eps: bool = True):
        if target not in TARGETS:
            raise ValueError(f"norm-absorb: target must be one of {TARGETS}, got {target!r}")
        self.target, self.adjust_eps = target, bool(adjust_eps)

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        pairs = norm_pairs(model)
        done, skipped = {}, []
        before = sigma_max_by_layer(model)
        for p in pairs:
            key = f"{p.layer_name} -> {p.norm_name}"
            if isinstance(p.norm, BATCHNORM):
                done[key] = _absorb_bn(p, self.target)
            elif isinstance(p.norm, nn.LayerNorm) and _ln_ok(p):
                done[key] = _absorb_ln(p, self.adjust_eps)
            else:
                skipped.append(f"{key} (normalizes over more than the layer's output features)")
        if not done:
            raise TransformNotApplicable(
                "no Linear/Conv feeds a BatchNorm or LayerNorm directly"
                + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
            )
        after = sigma_max_by_layer(model)
        stats = sigma_stats(before, after)
        stats["pairs"] = done
        stats["skipped"] = skipped
        exact = all(v["exact"] for v in done.values())
        note = (
            f"absorbed the scale of {len(done)} layer(s) into their norms (target={self.target}): "
            + ", ".join(done)
            + f"; max sigma_max {stats['max_sigma_before']:.4g} -> {stats['max_sigma_after']:.4g}"
            + ("" if exact else "; function-preserving only up to the norms' eps")
            + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
        )
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("norm-absorb", NormAbsorb)
