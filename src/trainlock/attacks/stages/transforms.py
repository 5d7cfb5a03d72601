"""The transforms step: the spec's weight-space transforms (the TRANSFORMS registry) applied in order, their folds
kept for the fold stage, the authorized task's accuracy measured after them."""

from __future__ import annotations

from dataclasses import dataclass

from ...train import accuracy
from ..transforms import TransformContext, TransformNotApplicable, apply_transforms
from .base import AttackState, StageNotApplicable


@dataclass
class Transforms:
    """((name, {options}), ...) applied by `apply_transforms`. Transforms that measure activations get the
    authorized task's inputs when the red team knows that task, else the attacker's own; insider transforms
    read the model directory's lock summary (`state.lock_summary`)."""

    transforms: tuple[tuple[str, dict], ...] = ()

    def __call__(self, state: AttackState) -> None:
        retain = state.adapted(state.retain)
        sample = (retain if retain is not None else state.adapted(state.task)).x_train[:256]
        ctx = TransformContext(sample=sample, lock_meta=state.lock_summary, seed=state.seed)
        try:
            applied = apply_transforms(state.model, self.transforms, ctx)
        except TransformNotApplicable as e:
            raise StageNotApplicable(str(e)) from e
        state.model = applied.model
        state.folds += applied.folds
        state.row.notes += applied.notes
        if retain is not None and self.transforms:
            state.row.authorized_after_transform = accuracy(state.model, retain.x_test, retain.y_test)
        elif retain is not None:
            state.row.authorized_after_transform = _start_accuracy(state.model, retain)


_START: dict[tuple, float] = {}  # (module tree, weights hash, retain test-split hash) -> accuracy, this process


def _start_accuracy(model, retain) -> float:
    """The authorized accuracy of a run's start weights, untransformed: every plain run from the released weights
    (and every run from scratch at one seed) starts from the same ones, so it is measured once per process."""
    from ...io.hashing import state_hashes, tensor_sha256

    key = (repr(model), state_hashes(model)["state"], tensor_sha256(retain.x_test, retain.y_test))
    if key not in _START:
        _START[key] = accuracy(model, retain.x_test, retain.y_test)
    return _START[key]
