"""Weight-space transforms applied before fine-tuning (the adaptive attacks).

A transform takes a model (already a copy: it may change it in place) and a context, and returns
a `TransformOutcome`. Function-preserving transforms must keep the model's outputs (tests check
with allclose). Training-time reparametrizations (layer injection, SVD chains) return a `fold`
that maps the trained model back to the original architecture after fine-tuning.

Register one factory per file, in one line: `TRANSFORMS.add("name", Factory)`; the factory takes
keyword options and returns a callable `transform(model, ctx) -> TransformOutcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from ...registry import Registry


@dataclass
class TransformContext:
    """What an attacker holding the weights knows besides them."""

    sample: torch.Tensor | None = (
        None  # a batch of inputs (the authorized task's, else the attacker's): logit scale, checks
    )
    lock_meta: dict | None = None  # the model directory's lock summary, meta["lock"] (e.g. pre-lock sigma stats)
    seed: int = 0


@dataclass
class TransformOutcome:
    model: nn.Module
    applied: bool = True  # False: the transform does not apply to this architecture (see note)
    note: str = ""  # what was done, or why it was skipped
    fold: Callable[[nn.Module], nn.Module] | None = None  # after training: back to the original form
    stats: dict = field(default_factory=dict)  # numbers worth reporting (e.g. sigma before/after)


@runtime_checkable
class Transform(Protocol):
    function_preserving: bool

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome: ...


TRANSFORMS: Registry[Callable[..., Transform]] = Registry("transform")


class TransformNotApplicable(Exception):
    """Raised inside a transform to skip it with a reason; the runner records the reason."""
