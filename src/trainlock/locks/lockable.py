"""Which weights a spectral lock deforms, and how their top singular values are measured.

By default every nn.Linear weight and every convolution kernel read as the (out, in*kh*kw)
matrix. `conv_mode="operator"` measures a Conv2d as the linear map it applies to its actual
input size (power iteration through conv / conv_transpose), which needs one sample batch.
`include` / `exclude` are regular expressions on parameter names (`"fc1.weight"`); `include`
also admits any other parameter with two or more dimensions (a custom module's matrix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..linalg.spectral import SpectralState, conv_singular_values, top_singular_values

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Lockable:
    """One deformable weight: its parameter name, owning module, and measurement mode."""

    name: str  # parameter name in the model, e.g. "features.0.weight"
    module: nn.Module
    param: nn.Parameter
    input_hw: tuple[int, int] | None = None  # set for conv operators
    state: SpectralState | None = field(default=None, repr=False)

    def sigma(self, k: int) -> torch.Tensor:
        """Top-k singular values (k,), differentiable, warm-started from the last call."""
        k = min(k, self.max_k)
        if self.input_hw is not None:
            s, self.state = conv_singular_values(self.module, self.input_hw, k, self.state)
        else:
            s, self.state = top_singular_values(unsharded(self.param), k, self.state)
        return s

    @property
    def max_k(self) -> int:
        if self.input_hw is not None:
            return 10**9
        return min(self.param.shape[0], self.param[0].numel())


def unsharded(w: torch.Tensor) -> torch.Tensor:
    """The whole weight: a parameter sharded by FSDP2 (a DTensor) is all-gathered, differentiably (its gradient
    goes back to this rank's shard); any other tensor is returned as it is."""
    full = getattr(w, "full_tensor", None)
    return full() if callable(full) else w


def _is_gpt2_conv1d(mod: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2 style): a linear map whose weight is stored (in, out); its singular
    values are those of the (out, in) matrix, so it is measured as it is."""
    return type(mod).__name__ == "Conv1D" and type(mod).__module__.startswith("transformers")


def find_lockable(
    model: nn.Module,
    include: str | None = None,
    exclude: str | None = None,
    conv_mode: str = "reshape",
    sample: torch.Tensor | None = None,
) -> list[Lockable]:
    """The lockable weights of `model`, in module order. Raises ValueError when there are none."""
    if conv_mode not in ("reshape", "operator"):
        raise ValueError(f"conv_mode must be 'reshape' or 'operator', got {conv_mode!r}")
    from ..config import check_regex

    check_regex("lockable weights", "include", include)  # ValueError naming it, not re.error
    check_regex("lockable weights", "exclude", exclude)
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None
    found: list[Lockable] = []
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if id(p) in seen or p.dim() < 2 or (exc and exc.search(full)):
                continue
            default = p_name == "weight" and (isinstance(mod, (nn.Linear, *_CONV)) or _is_gpt2_conv1d(mod))
            if (default and not inc) or (inc and inc.search(full)):
                seen.add(id(p))
                found.append(Lockable(full, mod, p))
    if not found:
        raise ValueError(
            "no lockable weights: the model has no nn.Linear / nn.Conv / transformers Conv1D weight"
            + (f" matching include={include!r}" if include else "")
            + (f" outside exclude={exclude!r}" if exclude else "")
        )
    if conv_mode == "operator":
        _attach_input_sizes(model, found, sample)
    return found


def _attach_input_sizes(model: nn.Module, found: list[Lockable], sample: torch.Tensor | None) -> None:
    """Record each Conv2d's input (H, W) from one forward pass of `sample`."""
    convs = {id(l.module): l for l in found if isinstance(l.module, nn.Conv2d)}
    if not convs:
        return
    if sample is None:
        raise ValueError("conv_mode='operator' needs a sample batch to learn each conv's input size")

    def hook(mod, inputs, _out):
        convs[id(mod)].input_hw = tuple(inputs[0].shape[-2:])

    handles = [l.module.register_forward_hook(hook) for l in convs.values()]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(sample[:1].to(next(model.parameters()).device))
            model.train(was)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def sigma_report(lockables: list[Lockable], k: int) -> dict:
    """Per-weight exact top-k singular values (dense SVD for matrices, converged power iteration
    for conv operators) and their summary: mean top-k, max sigma_max, per-layer table."""
    layers = {}
    for l in lockables:
        if l.input_hw is not None:
            s, _ = conv_singular_values(l.module, l.input_hw, min(k, 8))
        else:
            W = l.param.detach().float()
            s = torch.linalg.svdvals(W.reshape(W.shape[0], -1))[: min(k, l.max_k)]
        layers[l.name] = [float(v) for v in s]
    topk = [v for vals in layers.values() for v in vals]
    return {
        "mean_topk": sum(topk) / len(topk),
        "max_sigma": max(vals[0] for vals in layers.values()),
        "layers": layers,
    }
