"""`layer-injection`: put a trainable square matrix M = I after every locked layer, train, fold back.

Each selected nn.Linear (or nn.Conv1d/2d/3d, where M is a 1x1 convolution on the output channels)
W becomes the wrapper `Injected(locked=W, mix=M)` computing

    y = M (W x + b),    M initialised to the identity (so the model's function is unchanged).

With `freeze_locked=True` (the default) the original layer is frozen (requires_grad False) and only
the mixers train, so the attacker's optimizer never touches the deformed weights directly: it
moves fresh parameters that start with a unit spectrum, and the update it makes to the effective
weight M W is (Delta M) W, whatever scale the lock gave W. The SpecDef paper (Rosati et al.,
arXiv 2602.18868) shows that an attacker who knows the structure can restore fast convergence this
way at a linear increase in model size; here the increase is sum over wrapped layers of out^2
parameters (reported in `stats`). Whether it beats a given lock is what running the attack measures.

After training, `outcome.fold(model)` (also `fold_injections`) multiplies each mixer back in,
W' = M W and b' = M b (+ the mixer's bias, if a head swap gave it one), and puts the ORIGINAL module
object back in its place: same type, same parameter names, so `state_dict()` has exactly the keys
and shapes of the model before injection and loads into the original architecture.

Grouped convolutions are skipped (M W mixes channels across groups, which a grouped kernel cannot
hold), and so is the out_proj of nn.MultiheadAttention (which reads the weight without calling the
module); the reasons are recorded in `stats["skipped"]`. A head swap by `finetune(head="auto")` works:
`find_head` finds the last nn.Linear, the mixer, replaces it, and the fold still gives one Linear.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from ...locks.lockable import find_lockable
from ...train import clone_model
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def out_dim(module: nn.Module) -> int:
    """Output features (Linear) or output channels (Conv)."""
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def select_layers(model: nn.Module, which: str | None) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The lockable Linear / Conv1d-3d modules of `model` whose module name matches `which`
    (regex, `re.search`; None: all), in module order, and {name: reason} for those skipped.
    Raises TransformNotApplicable when the model has no lockable weight at all."""
    try:
        found = find_lockable(model)
    except ValueError as e:
        raise TransformNotApplicable(str(e)) from None
    rx = re.compile(which) if which else None
    names = {id(m): n for n, m in model.named_modules()}
    chosen: list[tuple[str, nn.Module]] = []
    skipped: dict[str, str] = {}
    for lk in found:
        mod, name = lk.module, names.get(id(lk.module), "")
        if rx is not None and not rx.search(name):
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if name else None
        if isinstance(parent, nn.MultiheadAttention):
            skipped[name] = "nn.MultiheadAttention reads its out_proj weight directly; it cannot be wrapped"
        elif not isinstance(mod, (nn.Linear, *_CONVS.values())):
            skipped[name or "<model>"] = f"{type(mod).__name__} is not a Linear or Conv1d/2d/3d"
        elif not isinstance(mod, nn.Linear) and mod.groups != 1:
            skipped[name or "<model>"] = f"grouped convolution (groups={mod.groups}) cannot hold a folded channel mix"
        else:
            chosen.append((name, mod))
    return chosen, skipped


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` at dotted path `name` inside `model`; returns the root (`new` itself when name is "")."""
    if not name:
        return new
    parent = model
    *path, leaf = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, new)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Injected(nn.Module):
    """`y = mix(locked(x))`: the original layer (`locked`) followed by a square channel mixer `mix`
    (a bias-free nn.Linear, or a 1x1 ConvNd for convolutions) initialised to the identity."""

    def __init__(self, locked: nn.Module, freeze: bool = True):
        super().__init__()
        w = locked.weight
        n = out_dim(locked)
        if isinstance(locked, nn.Linear):
            mix: nn.Module = nn.Linear(n, n, bias=False, device=w.device, dtype=w.dtype)
        else:
            mix = _CONVS[w.dim() - 2](n, n, 1, bias=False, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mix.weight.copy_(torch.eye(n, device=w.device, dtype=w.dtype).reshape(mix.weight.shape))
        # the original requires_grad flags, restored by the fold (a plain dict: not in state_dict)
        self.grad_flags = {k: p.requires_grad for k, p in locked.named_parameters(recurse=False)}
        if freeze:
            locked.requires_grad_(False)
        self.locked = locked
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.locked(x))

    @torch.no_grad()
    def fold(self) -> nn.Module:
        """The original layer with W' = M W, b' = M b (+ mixer bias); this wrapper is left spent."""
        mod, mix = self.locked, self.mix
        M = mix.weight.reshape(mix.weight.shape[0], -1)  # (out', out)
        W = mod.weight
        new_w = (M @ W.reshape(W.shape[0], -1)).reshape(M.shape[0], *W.shape[1:])
        new_b = M @ mod.bias if mod.bias is not None else None
        if getattr(mix, "bias", None) is not None:
            new_b = mix.bias.clone() if new_b is None else new_b + mix.bias
        mod.weight = nn.Parameter(new_w.contiguous(), requires_grad=self.grad_flags.get("weight", True))
        if new_b is not None:
            mod.bias = nn.Parameter(new_b.contiguous(), requires_grad=self.grad_flags.get("bias", True))
        if isinstance(mod, nn.Linear):
            mod.out_features = new_w.shape[0]
        else:
            mod.out_channels = new_w.shape[0]
        return mod


def fold_wrappers(model: nn.Module, kind: type, inplace: bool = False) -> nn.Module:
    """Replace every `kind` module (a wrapper with a `fold()` method) by its folded layer,
    innermost first. Returns a copy unless `inplace` (the input is then changed and returned)."""
    if not inplace:
        model = clone_model(model)
    wrappers = [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
    for name, w in reversed(wrappers):
        model = replace_module(model, name, w.fold())
    return model


def fold_injections(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every `Injected` wrapper in `model` back into its original layer."""
    return fold_wrappers(model, Injected, inplace)


def select_or_skip(model: nn.Module, which: str | None, what: str) -> tuple[list, dict]:
    """`select_layers`, raising TransformNotApplicable (with every layer's reason) when none qualifies."""
    chosen, skipped = select_layers(model, which)
    if not chosen:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or f"no layer matches which={which!r}"
        raise TransformNotApplicable(f"{what} ({why})")
    return chosen, skipped


class LayerInjection:
    """Factory options: `freeze_locked` (freeze the original layers; default True), `which`
    (regex on module names, e.g. "^body" or "head"; default: every lockable Linear/Conv)."""

    function_preserving = True

    def __init__(self, freeze_locked: bool = True, which: str | None = None):
        self.freeze_locked = bool(freeze_locked)
        self.which = which

    def __call__(self, model: nn.Module, ctx: TransformContext | None = None) -> TransformOutcome:
        chosen, skipped = select_or_skip(model, self.which, "layer-injection: nothing to wrap")
        before = count_params(model)
        layers = {}
        for name, mod in chosen:
            wrapper = Injected(mod, freeze=self.freeze_locked)
            model = replace_module(model, name, wrapper)
            layers[name or "<model>"] = {"out": out_dim(mod), "added": wrapper.mix.weight.numel()}
        added = sum(v["added"] for v in layers.values())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        stats = {
            "layers": layers,
            "skipped": skipped,
            "params_before": before,
            "params_added": added,
            "params_after": before + added,
            "relative_increase": added / max(1, before),
            "trainable_params": trainable,
            "freeze_locked": self.freeze_locked,
        }
        note = (
            f"injected an identity-initialised square mixer after {len(layers)} layer(s): +{added} parameters "
            f"({stats['relative_increase']:.1%}); original layers {'frozen' if self.freeze_locked else 'trainable'}"
            + (f"; skipped {len(skipped)}" if skipped else "")
        )
        return TransformOutcome(model=model, applied=True, note=note, fold=fold_injections, stats=stats)


TRANSFORMS.add("layer-injection", LayerInjection)
