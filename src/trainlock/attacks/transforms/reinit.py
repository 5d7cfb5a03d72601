"""`reinit`: re-initialize part of the released model, then fine-tune all of it.

Cheap and strong against locks concentrated in a few layers: what the lock inflated is thrown away,
and the rest of the released weights still give their head start. Three targets:

- `what="head"`: the classifier layer (`find_head`);
- `what="last"`: the last `n` blocks: the last `n` entries of the model's deepest stack of repeated
  blocks (an `nn.ModuleList` / `nn.Sequential` of same-type modules, e.g. BERT's `encoder.layer`,
  Llama's `layers`), or, without one, the last `n` Linear / Conv layers before the head;
- `what="inflated"`: the `n` lockable weights whose sigma_max / median singular value is largest
  (what a spectral lock inflates stands out from the bulk; read from the weights alone).

Every re-initialized module gets its own `reset_parameters` (torch's default initialization) under
`ctx.seed`. Not function-preserving.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...locks.lockable import find_lockable
from ...models import find_head
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome

WHAT = ("head", "last", "inflated")


def _resettable(m: nn.Module) -> list[nn.Module]:
    return [
        s
        for s in m.modules()
        if callable(getattr(s, "reset_parameters", None)) and any(True for _ in s.parameters(recurse=False))
    ]


def _block_stack(model: nn.Module) -> tuple[str, list[tuple[str, nn.Module]]] | None:
    """The deepest ModuleList / Sequential of >= 2 same-type children that own parameters."""
    best = None
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)):
            continue
        kids = [(f"{name}.{k}" if name else k, c) for k, c in m.named_children()]
        if (
            len(kids) >= 2
            and len({type(c) for _, c in kids}) == 1
            and any(True for _ in kids[0][1].parameters())
            and not isinstance(kids[0][1], (nn.Linear, nn.Conv2d, nn.Conv1d))
        ):
            depth = name.count(".") + 1
            if best is None or depth >= best[0]:
                best = (depth, name, kids)
    return None if best is None else (best[1], best[2])


def _sigma_ratio(w: torch.Tensor) -> float:
    s = torch.linalg.svdvals(w.detach().double().reshape(w.shape[0], -1))
    med = float(s.median())
    return float(s[0]) / med if med > 0 else float("inf")


class Reinit:
    """Factory options: what ("head" | "last" | "inflated"), n (blocks or layers)."""

    function_preserving = False

    def __init__(self, what: str = "head", n: int = 1):
        if what not in WHAT:
            raise ValueError(f"reinit: what must be one of {WHAT}, got {what!r}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"reinit: n must be an integer >= 1, got {n!r}")
        self.what, self.n = what, n

    def _targets(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        if self.what == "head":
            return [find_head(model)]
        if self.what == "last":
            stack = _block_stack(model)
            if stack is not None:
                return stack[1][-self.n :]
            head_name, _ = find_head(model)
            layers = [
                (n, m)
                for n, m in model.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and n != head_name
            ]
            if not layers:
                raise TransformNotApplicable("no block stack and no Linear / Conv layer besides the head")
            return layers[-self.n :]
        try:
            lockables = find_lockable(model)
        except ValueError as e:
            raise TransformNotApplicable(str(e)) from None
        ranked = sorted(lockables, key=lambda lk: -_sigma_ratio(lk.param))
        return [(lk.name.rsplit(".", 1)[0], lk.module) for lk in ranked[: self.n]]

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        targets = self._targets(model)
        torch.manual_seed(ctx.seed)
        n_params = 0
        with torch.no_grad():
            for _, m in targets:
                for s in _resettable(m):
                    s.reset_parameters()
                n_params += sum(p.numel() for p in m.parameters())
        total = sum(p.numel() for p in model.parameters())
        names = ", ".join(n for n, _ in targets)
        note = f"re-initialized {self.what} ({names}): {n_params:,} of {total:,} parameters"
        return TransformOutcome(
            model=model, note=note, stats={"reinitialized": [n for n, _ in targets], "parameters": n_params}
        )


TRANSFORMS.add("reinit", Reinit)
