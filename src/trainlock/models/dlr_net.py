"""The deep low-rank residual network (DLR-Net) that the `dlr` lock puts in place of MLP blocks, and how a
saved model's DLR-Nets are listed and rebuilt when it is loaded."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DLRNet(nn.Module):
    """DLR(x) = h_depth - x with h_0 = x, h_{l+1} = h_l + U_l gelu(V_l h_l); acts on the last dimension.
    `block` names the modules it replaces ({"first", "last", "between"}), for saving and loading."""

    def __init__(self, dim: int, depth: int, rank: int, block: dict | None = None):
        super().__init__()
        self.dim, self.depth, self.rank = int(dim), int(depth), int(rank)
        self.block = dict(block or {})
        self.down = nn.ModuleList(nn.Linear(dim, rank) for _ in range(depth))
        self.up = nn.ModuleList(nn.Linear(rank, dim) for _ in range(depth))
        for u in self.up:
            nn.init.zeros_(u.weight)
            nn.init.zeros_(u.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for v, u in zip(self.down, self.up, strict=False):
            h = h + u(F.gelu(v(h)))
        return h - x


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def replace_block(model: nn.Module, block: dict, net: DLRNet) -> None:
    """Put `net` at block["first"] and identities at block["last"] and block["between"] (in place)."""
    _set(model, block["first"], net)
    for name in [block["last"], *block.get("between", [])]:
        if name != block["first"]:
            _set(model, name, nn.Identity())


def dlr_structure(model: nn.Module) -> list[dict]:
    return [
        {
            "first": n,
            "last": m.block.get("last", n),
            "between": list(m.block.get("between", [])),
            "dim": m.dim,
            "depth": m.depth,
            "rank": m.rank,
        }
        for n, m in model.named_modules()
        if isinstance(m, DLRNet)
    ]


def restore_dlr(model: nn.Module, entries: list[dict]) -> nn.Module:
    """Re-insert empty DLR-Nets (in place) where `entries` (from `dlr_structure`) say."""
    for e in entries:
        block = {"first": e["first"], "last": e["last"], "between": list(e.get("between", []))}
        try:
            model.get_submodule(e["first"])
        except AttributeError:
            raise ValueError(f"restore_dlr: the model has no module {e['first']!r}") from None
        replace_block(model, block, DLRNet(int(e["dim"]), int(e["depth"]), int(e["rank"]), block))
    return model
