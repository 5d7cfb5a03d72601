"""`kfac`: K-FAC natural-gradient SGD for nn.Linear and nn.Conv2d layers (written here).

Martens & Grosse 2015 (K-FAC) for Linear layers; Grosse & Martens 2016 (KFC) for convolutions,
with the input unfolded into patches (one row per output location). For each tracked layer:

    a = layer input rows with a 1 appended for the bias     (rows: batch [x locations])
    g = gradient of the minibatch loss w.r.t. the layer output, same rows
    A_batch = a^T a / rows,    G_batch = B * g^T g          (B = batch size; B * g is the per-example
                                                             gradient, so G_batch = |T| E[Ds Ds^T])
    A <- decay * A + (1 - decay) * A_batch, same for G      (the first batch initialises them)
    every `inv_every` steps:  A_inv = (A + pi sqrt(damping) I)^-1,  G_inv = (G + sqrt(damping)/pi I)^-1
        with pi = sqrt((tr A / dim A) / (tr G / dim G)) ("pi"-corrected split) or pi = 1 ("sqrt")
    update of [W | b] (W flattened to out x in*kh*kw):  G_inv [dW | db] A_inv

Other parameters (norms, embeddings, frozen-bias layers, grouped convs) keep their plain gradient.
KL clipping (Ba et al. 2017; kl_clip default 1e-3, None turns it off) scales the preconditioned
part by nu = min(1, sqrt(kl_clip / (lr^2 sum <update, grad>))). Then SGD with momentum:
buf <- momentum * buf + (update + weight_decay * p);
p <- p - lr * buf. Statistics are recorded by a forward hook on each layer (in training mode with
grad enabled) and a tensor hook on its output; `close()` (or garbage collection) removes them.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import OPTIMIZERS, options


def _rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input as rows (one per output location), with a column of ones if the layer has a bias."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (B, C*k*k, T)
        a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        a = x.reshape(-1, x.shape[-1])
    return torch.cat([a, a.new_ones(a.shape[0], 1)], 1) if module.bias is not None else a


def _record(stats: dict):
    def forward_hook(module, inputs, output):
        if not (module.training and torch.is_grad_enabled() and output.requires_grad):
            return
        x = inputs[0].detach()
        with torch.no_grad():
            a = _rows(module, x)
            stats[module]["A"] = a.T @ a / a.shape[0]
        batch = x.shape[0]

        def grad_hook(g):
            with torch.no_grad():
                g = g.detach().movedim(1, -1) if isinstance(module, nn.Conv2d) else g.detach()
                g = g.reshape(-1, g.shape[-1])
                stats[module]["G"] = batch * (g.T @ g)

        output.register_hook(grad_hook)

    return forward_hook


class KFAC(torch.optim.Optimizer):
    def __init__(
        self,
        model: nn.Module,
        params,
        lr,
        momentum=0.9,
        damping=1e-3,
        decay=0.95,
        inv_every=10,
        weight_decay=0.0,
        kl_clip=1e-3,
        pi_damping=True,
    ):
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.damping, self.decay, self.inv_every, self.kl_clip, self.pi_damping = (
            damping,
            decay,
            inv_every,
            kl_clip,
            pi_damping,
        )
        owned = {p for g in self.param_groups for p in g["params"]}
        self.layers = [m for m in model.modules() if self._eligible(m, owned)]
        self._stats: dict = {m: {} for m in self.layers}  # per layer: latest batch A/G, running A/G, inverses
        hook = _record(self._stats)  # hooks see only the stats dict, never the optimizer
        self._handles = [m.register_forward_hook(hook) for m in self.layers]
        self._finalizer = weakref.finalize(self, _remove_all, self._handles)
        self._steps = 0

    @staticmethod
    def _eligible(m: nn.Module, owned: set) -> bool:
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or isinstance(m.padding, str) or m.padding_mode != "zeros":
                return False
        elif not isinstance(m, nn.Linear):
            return False
        return m.weight in owned and (m.bias is None or m.bias in owned)

    def close(self) -> None:
        """Remove the model hooks (also done when the optimizer is garbage-collected)."""
        self._finalizer()

    def _update_inverses(self, s: dict) -> None:
        A, G = s["A_avg"], s["G_avg"]
        pi = 1.0
        if self.pi_damping:
            ta, tg = float(A.trace()) / A.shape[0], float(G.trace()) / G.shape[0]
            pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
        root = math.sqrt(self.damping)
        s["A_inv"], s["G_inv"] = _damped_inv(A, pi * root), _damped_inv(G, root / pi)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        updates: dict = {}
        for m in self.layers:
            s = self._stats[m]
            if "A" in s and "G" in s:  # fold this batch's statistics into the running averages
                A, G = s.pop("A"), s.pop("G")
                first = "A_avg" not in s
                s["A_avg"] = A if first else s["A_avg"].lerp_(A, 1 - self.decay)
                s["G_avg"] = G if first else s["G_avg"].lerp_(G, 1 - self.decay)
                if first or self._steps % self.inv_every == 0:
                    self._update_inverses(s)
            if "A_inv" not in s or m.weight.grad is None or (m.bias is not None and m.bias.grad is None):
                continue
            grad = m.weight.grad.reshape(m.weight.shape[0], -1)
            if m.bias is not None:
                grad = torch.cat([grad, m.bias.grad[:, None]], 1)
            nat = s["G_inv"] @ grad @ s["A_inv"]
            if m.bias is not None:
                updates[m.bias] = nat[:, -1]
                nat = nat[:, :-1]
            updates[m.weight] = nat.reshape_as(m.weight)
        self._steps += 1
        nu = 1.0
        if self.kl_clip and updates:
            vg = sum(float((u * p.grad).sum()) for p, u in updates.items()) * self.param_groups[0]["lr"] ** 2
            nu = min(1.0, math.sqrt(self.kl_clip / vg)) if vg > 0 else 1.0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = updates[p] * nu if p in updates else p.grad
                if group["weight_decay"]:
                    d = d.add(p, alpha=group["weight_decay"])
                if group["momentum"]:
                    buf = self.state[p].get("momentum_buffer")
                    buf = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
                    d = self.state[p]["momentum_buffer"] = buf
                p.sub_(d, alpha=group["lr"])
        return loss


def _damped_inv(M: torch.Tensor, damping: float) -> torch.Tensor:
    """(M + damping I)^-1; all NaN if that fails (diverged statistics), so the step turns non-finite
    and the training loop's non-finite guard stops, as with any other diverging optimizer."""
    inv, info = torch.linalg.inv_ex(M + damping * torch.eye(M.shape[0], dtype=M.dtype, device=M.device))
    return inv if int(info) == 0 else torch.full_like(M, math.nan)


def _remove_all(handles: list) -> None:
    for h in handles:
        h.remove()
    handles.clear()


@dataclass
class KFACOptions:
    """`kfac` options beyond lr, weight_decay and momentum (keyword arguments of the factory)."""

    damping: float = field(
        default=1e-3, metadata={"help": "Tikhonov damping lambda, split between A and G as sqrt(lambda) (pi-corrected)"}
    )
    decay: float = field(default=0.95, metadata={"help": "EMA decay of the A and G statistics"})
    inv_every: int = field(default=10, metadata={"help": "steps between recomputations of the damped inverses"})
    kl_clip: float | None = field(
        default=1e-3,
        metadata={"help": "cap on lr^2 <update, grad> of the preconditioned layers (None: no KL clipping)"},
    )
    pi_damping: bool = field(default=True, metadata={"help": "False: plain sqrt(lambda) on both factors"})


def kfac(
    params,
    lr,
    model=None,  # the nn.Module being trained (K-FAC hooks its Linear / Conv2d layers)
    momentum=0.9,  # SGD momentum applied after preconditioning
    weight_decay=0.0,  # L2 term added to the (preconditioned) update
    **extra,  # the fields of KFACOptions
):
    o = options(KFACOptions, "kfac", extra)
    if model is None:
        raise ValueError("kfac needs the model (make_optimizer(..., model=model)) to hook its layers")
    return KFAC(
        model,
        params,
        lr,
        momentum=momentum,
        damping=o.damping,
        decay=o.decay,
        inv_every=o.inv_every,
        weight_decay=weight_decay,
        kl_clip=o.kl_clip,
        pi_damping=o.pi_damping,
    )


OPTIMIZERS.add("kfac", kfac)
