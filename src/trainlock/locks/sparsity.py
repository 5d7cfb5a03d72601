"""`sparsity`: ||theta||_0 <= k over the lockable weights, by magnitude pruning and a kept mask.

The lock factory note's "capacity lock". Pruning is `trainlock.locks.compress.magnitude_prune` (global
threshold by default, ties broken by position so the counts are exact) over the lockable weights
(every nn.Linear weight and conv kernel). Config: `fraction` (of those weights set to zero) or
`k` (how many may stay nonzero; pruned with the global threshold), exactly one of them.

Enforcement during training: each pruned module keeps its 0/1 mask as a non-persistent buffer
(`_sparsity_mask_<param>`, not in the state_dict) and carries a `spectral_cap.ProjectionHook`
that multiplies the weight by the mask before every forward pass and after every optimizer step
(the global step post-hook), so pruned entries are exactly zero in the forward pass and in the
stored weights after each step, whatever the optimizer (momentum or Adam state included: the
update may move a pruned entry, the projection puts it back to zero). The note's "theta_i -> 0 if
|theta_i| < tau" re-thresholding would let the support move; the mask keeps it fixed.

The certificate counts nonzeros in the weights; nothing else. Removing the hooks (or loading the
weights into a fresh module) lets training fill the zeros in again: training-time only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import option
from ..tasks import Task
from ..train import clone_model
from .base import BaseLock, Certificate, Locked, register_lock
from .compress import magnitude_prune
from .lockable import find_lockable
from .spectral_cap import ProjectionHook, attach_projection

SCOPES = ("global", "layer")


class MaskHook(ProjectionHook):
    """param *= module.<buffer_name> (a bool or 0/1 mask), in place."""

    def __init__(self, param_name: str, buffer_name: str):
        super().__init__(param_name)
        self.buffer_name = buffer_name

    def project_(self, module: nn.Module, param: torch.Tensor) -> None:
        mask = getattr(module, self.buffer_name, None)
        if mask is not None:
            param.mul_(mask.to(param.dtype))


@dataclass
class SparsityConfig:
    """Prune `fraction` of the lockable weights, or keep at most `k` of them nonzero."""

    fraction: float | None = option(None, "prune this fraction of the lockable weights (give fraction or k)")
    k: int | None = option(None, "keep at most this many lockable weights nonzero (give fraction or k)")
    scope: str = option("global", "magnitude_prune scope for fraction: global or layer")

    def __post_init__(self):
        if (self.fraction is None) == (self.k is None):
            raise ValueError(
                "sparsity: give exactly one of 'fraction' (share of weights pruned) and 'k' "
                f"(nonzeros kept); got fraction={self.fraction!r}, k={self.k!r}"
            )
        if self.fraction is not None and not (isinstance(self.fraction, (int, float)) and 0.0 <= self.fraction < 1.0):
            raise ValueError(f"sparsity: fraction must be in [0, 1) (1 would zero every weight), got {self.fraction!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"sparsity: k must be an integer >= 1 (0 would zero every weight), got {self.k!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"sparsity: scope must be one of {SCOPES}, got {self.scope!r}")
        if self.k is not None and self.scope != "global":
            raise ValueError("sparsity: k is a global count; use scope='global' (or give fraction)")


def count_nonzero(model: nn.Module) -> dict[str, int]:
    """Nonzero entries per lockable weight."""
    return {l.name: int(torch.count_nonzero(l.param.detach())) for l in find_lockable(model)}


@dataclass
class SparsityRecord:
    max_nonzero: int | None = option(None, "the certified bound on nonzero lockable weights, measured by apply")


@register_lock("sparsity", SparsityConfig, example={"fraction": 0.5})
class SparsityLock(BaseLock):
    """Magnitude-prune the lockable weights and keep the pruned entries at zero."""

    record_cls = SparsityRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        lockables = find_lockable(model)  # ValueError when there is nothing to prune
        total = sum(l.param.numel() for l in lockables)
        if self.cfg.k is not None:
            if self.cfg.k > total:
                raise ValueError(f"sparsity: k={self.cfg.k} exceeds the {total} lockable weights")
            fraction = (total - self.cfg.k) / total if total else 0.0
        else:
            fraction = float(self.cfg.fraction)
        locked = clone_model(model)
        masks = magnitude_prune(locked, fraction, scope=self.cfg.scope)
        kept = 0
        for l in find_lockable(locked):
            mask = masks[l.name]
            kept += int(mask.sum())
            p_name = l.name.rsplit(".", 1)[-1]
            buf = f"_sparsity_mask_{p_name}"
            l.module.register_buffer(buf, mask.clone(), persistent=False)
            attach_projection(l.module, MaskHook(p_name, buf))
        bound = kept if self.cfg.k is None else min(kept, self.cfg.k)
        if kept > bound:  # cannot happen with the global threshold; guard the claim anyway
            raise ValueError(f"sparsity: pruning kept {kept} weights, more than k={self.cfg.k}")
        return Locked(locked, SparsityRecord(bound))

    def certify(self, model: nn.Module, record: SparsityRecord) -> list[Certificate]:
        bound = record.max_nonzero if record.max_nonzero is not None else self.cfg.k
        if bound is None:
            raise ValueError("sparsity: no bound recorded; apply the lock first (or give k)")
        layers = count_nonzero(model)
        total = sum(l.param.numel() for l in find_lockable(model))
        return [
            Certificate(
                lock=self.name,
                invariant="number of nonzero entries in the lockable weights (||theta||_0)",
                measured=float(sum(layers.values())),
                required=float(bound),
                relation="<=",
                proof_of_gap=(
                    f"the weights live on a fixed support of at most {bound} of {total} entries; any parameter "
                    f"setting that needs a weight outside that support is unreachable while the mask holds"
                ),
                preservation=(
                    "a kept mask multiplies each pruned weight before every forward pass and after every "
                    "optimizer step (projection), so pruned entries stay exactly zero during training"
                ),
                threat_model="training-time",
                adversary_can_remove=True,
                removal="remove the mask hooks (spectral_cap.remove_projections) or load the weights into a fresh "
                "module and train: the zeros are ordinary weights that gradients fill in",
                method="torch.count_nonzero over find_lockable(model) weights",
                details={"layers": layers, "total": total, "fraction": self.cfg.fraction, "k": self.cfg.k},
            )
        ]


__all__ = ["MaskHook", "SparsityConfig", "SparsityLock", "SparsityRecord", "count_nonzero"]
