"""`frozen`: the parameters whose names match `names` keep their exact values.

The lock factory note's "layer freezing lock": {theta : theta_frozen = theta_0^frozen} is invariant
under training when those parameters get no update. `apply` sets requires_grad=False on a copy
(so `trainlock.train.loop.fit`, which optimizes only parameters that require grad, never steps
them; weight decay included) and records a SHA-256 of each matched tensor (the lock's record).

The hash covers the tensor's dtype and shape and then its raw bytes (C-contiguous, on CPU), so a
single changed bit, a cast or a reshape all show. `certify` recomputes the hashes from the weights.
Anyone holding the weights sets requires_grad back to True: a training-time lock only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from ..config import option
from ..io.hashing import tensor_sha256
from ..tasks import Task
from ..train import clone_model
from .base import BaseLock, Certificate, Locked, register_lock


@dataclass
class FrozenConfig:
    """`names`: regular expressions over parameter names (re.search); each must match something."""

    names: tuple[str, ...] = option((), "regular expressions over parameter names (re.search); each must match")

    def __post_init__(self):
        if isinstance(self.names, str):
            self.names = (self.names,)
        if not self.names:
            raise ValueError("frozen: 'names' must list at least one regular expression over parameter names")
        for pat in self.names:
            if not isinstance(pat, str):
                raise ValueError(f"frozen: names must be strings (regular expressions), got {pat!r}")
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"frozen: {pat!r} is not a valid regular expression ({e})") from None


def matched_parameters(model: nn.Module, patterns) -> dict[str, nn.Parameter]:
    """{name: parameter} for every parameter whose name matches one of `patterns`.

    Raises ValueError naming the pattern that matches nothing, with a few parameter names."""
    params = dict(model.named_parameters())
    found: dict[str, nn.Parameter] = {}
    for pat in patterns:
        rx = re.compile(pat)
        hits = [n for n in params if rx.search(n)]
        if not hits:
            few = list(params)[:8]
            more = f" (and {len(params) - len(few)} more)" if len(params) > len(few) else ""
            raise ValueError(f"frozen: {pat!r} matches no parameter name; the model has e.g. {few}{more}")
        for n in hits:
            found[n] = params[n]
    return found


@dataclass
class FrozenRecord:
    hashes: dict = option(factory=dict, help="{parameter name: SHA-256} of every frozen tensor at lock time")


@register_lock("frozen", FrozenConfig, example={"names": ["bias"]})
class FrozenLock(BaseLock):
    """Freeze matched parameters (requires_grad=False) and certify them by SHA-256."""

    record_cls = FrozenRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        matched_parameters(model, self.cfg.names)  # fails on the original, before any copy or training
        locked = clone_model(model)
        params = matched_parameters(locked, self.cfg.names)
        for p in params.values():
            p.requires_grad_(False)
        return Locked(locked, FrozenRecord({n: tensor_sha256(p) for n, p in params.items()}))

    def certify(self, model: nn.Module, record: FrozenRecord) -> list[Certificate]:
        if not record.hashes:
            raise ValueError("frozen: no hashes recorded; apply the lock first")
        params = dict(model.named_parameters())
        changed, missing = [], []
        for n, h in record.hashes.items():
            if n not in params:
                missing.append(n)
            elif h not in (tensor_sha256(params[n]), tensor_sha256(params[n], legacy=True)):  # legacy: <= 0.2.0
                changed.append(n)
        n_frozen = len(record.hashes)
        unchanged = n_frozen - len(changed) - len(missing)
        still_frozen = [n for n in record.hashes if n in params and not params[n].requires_grad]
        return [
            Certificate(
                lock=self.name,
                invariant="number of frozen tensors whose SHA-256 equals the one recorded at lock time",
                measured=float(unchanged),
                required=float(n_frozen),
                relation="==",
                proof_of_gap=(
                    "the frozen tensors are bit-identical to their recorded values, so every configuration with "
                    "different values in them (e.g. changed pretrained layers) is outside the locked subspace"
                ),
                preservation=(
                    "requires_grad=False: the training loop builds its optimizer from parameters that require "
                    "grad only, so frozen tensors receive no update (no gradient step, no weight decay)"
                ),
                threat_model="training-time",
                adversary_can_remove=True,
                removal="set requires_grad back to True (or optimize the tensors directly): nothing in the weights "
                "resists change",
                method="SHA-256 over dtype, shape and raw bytes of each recorded tensor",
                details={
                    "frozen": sorted(record.hashes),
                    "changed": changed,
                    "missing": missing,
                    "requires_grad_false": len(still_frozen),
                },
            )
        ]


__all__ = ["FrozenConfig", "FrozenLock", "FrozenRecord", "matched_parameters", "tensor_sha256"]
