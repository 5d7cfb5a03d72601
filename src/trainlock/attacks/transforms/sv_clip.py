"""`sv-clip`: clip every lockable weight's singular values back to a pre-lock level.

SpecDef inflates the top singular values of every Linear/Conv weight. The blind attack (the default:
what a real attacker has is the released weights) takes the threshold from the matrix's own spectrum:
`spread` (default 3) times its median singular value, i.e. the spectrum is re-normalized toward
typical statistics of an unlocked weight, where the top value is a small multiple of the bulk. The
insider variant (`use_record=True`) reads the lock's private record
(`lock_meta["sigma_before"]["layers"][name][0]`, the pre-lock sigma_max of that weight), which a
released model must not carry (`trainlock release` strips it); reports mark such runs "insider".

`mode="clip"`: W = U diag(min(s, tau)) V^T (only the inflated directions change).
`mode="renorm"`: W *= tau / sigma_max when sigma_max > tau (the whole matrix shrinks).
Convolution kernels are read as (out, in*kh*kw) matrices. If the lock measured convolutions as
operators (`config.conv_mode == "operator"`) and ctx.sample is given, conv layers are renormed by
their operator norm instead (the only exact way to set an operator norm). Not function-preserving.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...locks.lockable import find_lockable, sigma_report
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import lock_meta

MODES = ("clip", "renorm")


def recorded_sigma(meta: dict | None) -> dict[str, float]:
    """Pre-lock sigma_max per parameter name from a lock summary (empty when absent)."""
    try:
        layers = meta["sigma_before"]["layers"]
    except (KeyError, TypeError):
        return {}
    out = {}
    for name, vals in (layers or {}).items():
        if isinstance(vals, (list, tuple)) and vals:
            out[name] = float(vals[0])
        elif isinstance(vals, (int, float)):
            out[name] = float(vals)
    return out


class SVClip:
    """Factory options: mode ("clip" | "renorm"), spread (threshold = spread * median sigma without a record)."""

    function_preserving = False

    def __init__(self, mode: str = "clip", spread: float = 3.0, use_record: bool = False):
        if mode not in MODES:
            raise ValueError(f"sv-clip: mode must be one of {MODES}, got {mode!r}")
        if not float(spread) > 0:
            raise ValueError(f"sv-clip: spread must be > 0, got {spread!r}")
        self.mode, self.spread, self.use_record = mode, float(spread), bool(use_record)

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        try:
            lockables = find_lockable(model)
        except ValueError as e:
            raise TransformNotApplicable(str(e)) from None
        meta = lock_meta(ctx) if self.use_record else None
        record = recorded_sigma(meta)
        conv_mode = ((meta or {}).get("config") or {}).get("conv_mode", "reshape")
        sample = getattr(ctx, "sample", None)
        op_sigma: dict[str, float] = {}
        if conv_mode == "operator" and sample is not None:
            convs = [l for l in find_lockable(model, conv_mode="operator", sample=sample) if l.input_hw is not None]
            op_sigma = {k: v[0] for k, v in sigma_report(convs, 1)["layers"].items()} if convs else {}
        layers, changed = {}, 0
        with torch.no_grad():
            for l in lockables:
                W = l.param
                M = W.detach().double().reshape(W.shape[0], -1)
                s = torch.linalg.svdvals(M)
                if self.use_record and l.name in record:
                    tau, source = record[l.name], "recorded"
                else:
                    tau, source = self.spread * float(s.median()), f"{self.spread:g} x median"
                before = float(s[0])
                if l.name in op_sigma and source == "recorded":
                    before = op_sigma[l.name]
                    if before > tau:
                        W.mul_(tau / before)
                    after, how = min(before, tau), "renorm (operator)"
                elif before > tau and tau > 0:
                    if self.mode == "clip":
                        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
                        W.copy_(((U * S.clamp(max=tau)) @ Vh).reshape(W.shape).to(W.dtype))
                    else:
                        W.mul_(tau / before)
                    after = float(torch.linalg.matrix_norm(W.detach().double().reshape(W.shape[0], -1), 2))
                    how = self.mode
                else:
                    after, how = before, "unchanged"
                changed += how != "unchanged"
                layers[l.name] = {"before": before, "after": after, "threshold": tau, "source": source, "action": how}
        stats = {
            "sigma_max": {k: {"before": v["before"], "after": v["after"]} for k, v in layers.items()},
            "max_sigma_before": max(v["before"] for v in layers.values()),
            "max_sigma_after": max(v["after"] for v in layers.values()),
            "layers": layers,
        }
        src = "recorded pre-lock sigma_max" if record else f"{self.spread:g} x median singular value"
        note = (
            f"{self.mode}: {changed}/{len(layers)} weight(s) above threshold ({src}) brought down; "
            f"max sigma_max {stats['max_sigma_before']:.4g} -> {stats['max_sigma_after']:.4g}"
        )
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("sv-clip", SVClip)
