"""`muon`: torch.optim.Muon on 2-D weight matrices, AdamW on everything else, as ONE optimizer.

Muon orthogonalises the momentum of a matrix (Newton-Schulz), so it only takes 2-D parameters;
conv kernels (4-D), biases and norm scales go to AdamW. The training loop needs a single
torch.optim.Optimizer (StepLR wraps it), so `MuonAdamW` holds both and exposes the union of their
param_groups (the very same dicts): an lr change made on it reaches both inner optimizers.
With adjust_lr_fn="match_rms_adamw" (Moonshot's scaling), Muon can share AdamW's lr.
"""

from __future__ import annotations

import torch

from .base import OPTIMIZERS


class MuonAdamW(torch.optim.Optimizer):
    """Steps each inner optimizer; `param_groups` is the concatenation of theirs (shared dicts)."""

    def __init__(self, inner: list[torch.optim.Optimizer]):
        self.inner = list(inner)
        super().__init__([g for o in self.inner for g in o.param_groups], {})

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.inner:
            o.step()
        return loss

    def state_dict(self):
        return {"inner": [o.state_dict() for o in self.inner]}

    def load_state_dict(self, state_dict):
        for o, sd in zip(self.inner, state_dict["inner"], strict=True):
            o.load_state_dict(sd)  # this replaces the inner group dicts: share the new ones again
        self.param_groups = [g for o in self.inner for g in o.param_groups]


def muon(
    params,
    lr,
    weight_decay=0.01,  # decoupled weight decay for both parts (the registry's AdamW default)
    momentum=0.95,  # Muon's (Nesterov) momentum
    adjust_lr_fn="match_rms_adamw",  # Muon's per-shape lr scaling: "match_rms_adamw" or "original"
    ns_steps=5,  # Newton-Schulz iterations per orthogonalisation
    adamw_lr=None,  # lr of the AdamW part (None: lr)
    adamw_betas=(0.9, 0.999),  # AdamW betas for the non-matrix parameters
):
    params = list(params)
    if any(not isinstance(p, torch.Tensor) for p in params):
        raise TypeError("muon takes a flat iterable of parameters, not parameter groups")
    matrices = [p for p in params if p.ndim == 2]
    rest = [p for p in params if p.ndim != 2]
    inner: list[torch.optim.Optimizer] = []
    if matrices:
        inner.append(
            torch.optim.Muon(
                matrices,
                lr=lr,
                weight_decay=weight_decay,
                momentum=momentum,
                nesterov=True,
                ns_steps=ns_steps,
                adjust_lr_fn=adjust_lr_fn,
            )
        )
    if rest:
        inner.append(
            torch.optim.AdamW(
                rest, lr=lr if adamw_lr is None else adamw_lr, betas=adamw_betas, weight_decay=weight_decay
            )
        )
    if not inner:
        raise ValueError("optimizer got an empty parameter list")
    return MuonAdamW(inner)


OPTIMIZERS.add("muon", muon)
