"""`rescale`: function-preserving per-neuron rescaling across positively homogeneous activations.

For a chain producer -> ReLU (LeakyReLU, max/avg pooling, flatten, dropout) -> consumer, scaling
producer output unit i (row i of W and b_i) by 1/d_i and the consumer's input column(s) i by d_i
(d_i > 0) leaves the network function unchanged, because relu(x / d) = relu(x) / d. A lock that
inflates one layer's spectrum while the next layer compensates is thus not a property of the
function but of this gauge; choosing d_i = sqrt(||row_i(W_prod)|| / ||col_i(W_cons)||) balances the
two norms (both become their geometric mean) and redistributes the inflated spectrum between the
layers. Sweeps repeat the balancing over all pairs (a layer can be consumer of one pair and
producer of the next) until the gauge settles.

`mode="scalar"` uses one factor per pair instead, chosen to equalize the two layers' sigma_max.

A producer followed by an eval-mode BatchNorm is rescaled through the norm's weight and bias (the
norm would undo a scale on the producer itself); its effective rows are W_i * gamma_i / sqrt(var_i+eps).
Across a flatten, conv channel i owns H'*W' consecutive input columns of the Linear.
Pairs through non-homogeneous activations (tanh, GELU, sigmoid, ...) are skipped and listed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import Chain, find_chains, sigma_max_by_layer, sigma_stats, weight_matrix

MODES = ("vector", "scalar")


def _effective_producer(chain: Chain) -> torch.Tensor:
    """(units, fan_in) matrix of what reaches the activation, in float64."""
    w = weight_matrix(chain.producer).detach().double()
    if chain.norm is not None:
        bn = chain.norm
        s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * s[:, None]
    return w


def _consumer_blocks(chain: Chain) -> torch.Tensor:
    """The consumer weight as (out, units, columns per unit): a view sharing storage."""
    w = chain.consumer.weight
    units = weight_matrix(chain.producer).shape[0]
    return w.reshape(w.shape[0], units, -1)


@torch.no_grad()
def _apply(chain: Chain, d: torch.Tensor) -> None:
    """Scale producer unit i by 1/d_i (through the BatchNorm if any) and consumer columns i by d_i."""
    if chain.norm is not None:
        tgt = chain.norm
    else:
        tgt = chain.producer
    shape = [-1] + [1] * (tgt.weight.dim() - 1)
    tgt.weight.div_(d.to(tgt.weight.dtype).reshape(shape))
    if tgt.bias is not None:
        tgt.bias.div_(d.to(tgt.bias.dtype))
    w = chain.consumer.weight
    w.copy_((_consumer_blocks(chain) * d.to(w.dtype)[None, :, None]).reshape(w.shape))


@torch.no_grad()
def _vector_factors(chain: Chain) -> torch.Tensor:
    row = torch.linalg.vector_norm(_effective_producer(chain), dim=1)
    col = torch.linalg.vector_norm(_consumer_blocks(chain).detach().double(), dim=(0, 2))
    ok = (row > 0) & (col > 0) & torch.isfinite(row) & torch.isfinite(col)
    d = torch.ones_like(row)
    d[ok] = torch.sqrt(row[ok] / col[ok])
    return d


@torch.no_grad()
def _scalar_factor(chain: Chain) -> torch.Tensor:
    units = weight_matrix(chain.producer).shape[0]
    sp = torch.linalg.matrix_norm(_effective_producer(chain), 2)
    wc = chain.consumer.weight.detach().double()
    sc = torch.linalg.matrix_norm(wc.reshape(wc.shape[0], -1), 2)
    a = torch.sqrt(sp / sc) if sp > 0 and sc > 0 else torch.tensor(1.0, dtype=torch.float64)
    return a.expand(units).clone()


class Rescale:
    """Factory options: mode ("vector" per-neuron | "scalar" per pair), sweeps, include_norm."""

    function_preserving = True

    def __init__(self, mode: str = "vector", sweeps: int = 5, include_norm: bool = True):
        if mode not in MODES:
            raise ValueError(f"rescale: mode must be one of {MODES}, got {mode!r}")
        if int(sweeps) < 1:
            raise ValueError(f"rescale: sweeps must be >= 1, got {sweeps!r}")
        self.mode, self.sweeps, self.include_norm = mode, int(sweeps), bool(include_norm)

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        chains = find_chains(model)
        usable = [c for c in chains if c.homogeneous and (self.include_norm or c.norm is None)]
        skipped = [c for c in chains if c not in usable]
        skip_txt = "; ".join(
            f"{c.describe()} ({c.blocker} is not positively homogeneous)"
            if c.blocker
            else f"{c.describe()} (through {c.norm_name}, include_norm=False)"
            for c in skipped
        )
        if not usable:
            raise TransformNotApplicable(
                "no producer -> positively homogeneous activation -> consumer pair"
                + (f"; skipped: {skip_txt}" if skipped else " (no Linear/Conv chain found)")
            )
        before = sigma_max_by_layer(model)
        total = {c.describe(): torch.ones(weight_matrix(c.producer).shape[0], dtype=torch.float64) for c in usable}
        for _ in range(self.sweeps):
            for c in usable:
                d = _vector_factors(c) if self.mode == "vector" else _scalar_factor(c)
                _apply(c, d)
                total[c.describe()] *= d
        after = sigma_max_by_layer(model)
        stats = sigma_stats(before, after)
        stats["pairs"] = {k: {"d_min": float(v.min()), "d_max": float(v.max())} for k, v in total.items()}
        stats["skipped"] = [c.describe() for c in skipped]
        note = (
            f"rescaled {len(usable)} pair(s) ({self.mode}, {self.sweeps} sweeps): "
            + ", ".join(c.describe() for c in usable)
            + f"; max sigma_max {stats['max_sigma_before']:.4g} -> {stats['max_sigma_after']:.4g}"
            + (f"; skipped: {skip_txt}" if skipped else "")
        )
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("rescale", Rescale)
