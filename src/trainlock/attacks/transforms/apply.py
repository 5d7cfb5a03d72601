"""The one way transforms are applied: in order, each on the previous one's model, folds kept for after training.

    applied = apply_transforms(clone_model(model), (("layer-injection", {}), ("sv-clip", {"use_record": True})), ctx)
    trained = train(applied.model)
    final = applied.fold(trained)          # the folds, last transform first: back to the released architecture

The red team's runs (`trainlock.attacks.stages`) and the paper's Tables 2 and 3 all go through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch.nn as nn

from .base import TRANSFORMS, TransformContext, TransformNotApplicable

Fold = Callable[[nn.Module], nn.Module]


class Applied(NamedTuple):
    """A transformed model, each transform's fold (None: nothing to undo) and its note, in order."""

    model: nn.Module
    folds: tuple[Fold | None, ...] = ()
    notes: tuple[str, ...] = ()

    def fold(self, trained: nn.Module) -> nn.Module:
        """`trained` mapped back through the folds, the last transform's first."""
        return fold_back(trained, self.folds)


def apply_transforms(model: nn.Module, transforms: Iterable[tuple[str, dict]], ctx: TransformContext) -> Applied:
    """Apply the registered `transforms` ((name, {options}), ...) to `model` in order. `model` is changed in place:
    pass a copy. A transform that does not apply raises TransformNotApplicable("NAME: why")."""
    folds: list[Fold | None] = []
    notes: list[str] = []
    for name, opts in transforms:
        try:
            out = TRANSFORMS.get(name)(**dict(opts))(model, ctx)
        except TransformNotApplicable as e:
            raise TransformNotApplicable(f"{name}: {e}") from e
        model = out.model
        folds.append(out.fold)
        notes.append(f"{name}: {out.note}" if out.note else name)
    return Applied(model, tuple(folds), tuple(notes))


def fold_back(model: nn.Module, folds: Iterable[Fold | None]) -> nn.Module:
    """`model` through `folds` in reverse order (None entries are skipped)."""
    for fold in reversed(list(folds)):
        if fold is not None:
            model = fold(model)
    return model
