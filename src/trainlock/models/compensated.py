"""Compensated layers: a Linear followed by a bias-free Linear (the specdef-reparam lock inserts
them), and how a saved model's inserted layers are listed and rebuilt when it is loaded."""

from __future__ import annotations

import torch
import torch.nn as nn


class Compensated(nn.Module):
    """y = comp(layer(x)): a deformed Linear followed by its compensation (a bias-free Linear)."""

    def __init__(self, layer: nn.Linear, comp: nn.Linear):
        super().__init__()
        self.layer = layer
        self.comp = comp

    @property
    def in_features(self) -> int:
        return self.layer.in_features

    @property
    def out_features(self) -> int:
        return self.comp.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.comp(self.layer(x))


def get_module(model: nn.Module, name: str) -> nn.Module:
    mod = model
    for part in name.split("."):
        mod = getattr(mod, part)
    return mod


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    *path, leaf = name.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, new)


def structure_meta(model: nn.Module) -> dict:
    """{"wrappers": [{"name", "in", "out", "bias"}, ...]} for every Compensated module in `model`, and
    {"dlr": [...]} for every DLR-Net (see `trainlock.models.dlr_net`) when there are any."""
    from .dlr_net import dlr_structure

    out = {
        "wrappers": [
            {"name": n, "in": m.layer.in_features, "out": m.layer.out_features, "bias": m.layer.bias is not None}
            for n, m in model.named_modules()
            if isinstance(m, Compensated)
        ]
    }
    dlr = dlr_structure(model)
    if dlr:
        out["dlr"] = dlr
    return out


def restore_structure(model: nn.Module, meta: dict | list) -> nn.Module:
    """Re-insert empty `Compensated` wrappers (in place) where `meta` (from `structure_meta`) says;
    the model can then load the state_dict of a reparametrized model. Returns `model`."""
    wrappers = meta.get("wrappers", []) if isinstance(meta, dict) else list(meta)
    if isinstance(meta, dict) and meta.get("dlr"):
        from .dlr_net import restore_dlr

        restore_dlr(model, meta["dlr"])
    for w in wrappers:
        name, n_in, n_out = w["name"], int(w["in"]), int(w["out"])
        try:
            mod = get_module(model, name)
        except AttributeError:
            raise ValueError(f"restore_structure: the model has no module {name!r}") from None
        if isinstance(mod, Compensated):
            continue
        if not isinstance(mod, nn.Linear) or (mod.in_features, mod.out_features) != (n_in, n_out):
            raise ValueError(
                f"restore_structure: {name!r} is {mod.__class__.__name__}, expected nn.Linear({n_in}, {n_out})"
            )
        comp = nn.Linear(n_out, n_out, bias=False).to(device=mod.weight.device, dtype=mod.weight.dtype)
        set_module(model, name, Compensated(mod, comp))
    return model


__all__ = ["Compensated", "get_module", "restore_structure", "set_module", "structure_meta"]
