"""`architecture`: the network's structure (layer count, every parameter's name and shape) is fixed.

The lock factory note's "topological lock": L(theta) = L_0 and d_l(theta) = d_l^0. `apply` records
the number of layers, counted as the modules that own parameters directly (a Linear, a Conv, a
norm layer, a custom module with its own nn.Parameter), and the (name, shape) of every parameter;
it changes nothing (returns a plain copy). `certify` counts mismatches against the record: each
missing, added or re-shaped parameter is one, and a different layer count is one more.

Plain gradient training never changes shapes, so the invariant holds for any optimizer; whoever
holds the weights swaps or adds modules at will (this is how the red team's merge / injection
transforms work), so it is a training-time statement about one's own run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..config import option
from ..tasks import Task
from ..train import clone_model
from .base import BaseLock, Certificate, Locked, register_lock


def layer_count(model: nn.Module) -> int:
    """Modules that own at least one parameter directly."""
    return sum(1 for m in model.modules() if next(m.parameters(recurse=False), None) is not None)


def parameter_shapes(model: nn.Module) -> list[list]:
    """[[name, [sizes...]], ...] for every parameter, in module order."""
    return [[n, list(p.shape)] for n, p in model.named_parameters()]


@dataclass
class ArchitectureConfig:
    """No settings: the lock records the architecture of the model it is applied to."""


@dataclass
class ArchitectureRecord:
    layers: int | None = option(None, "number of parameter-owning modules at lock time")
    shapes: tuple | None = option(None, "([name, [sizes]], ...) of every parameter at lock time")


@register_lock("architecture", ArchitectureConfig, example={})
class ArchitectureLock(BaseLock):
    record_cls = ArchitectureRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        if next(model.parameters(), None) is None:
            raise ValueError("architecture: the model has no parameters to record")
        locked = clone_model(model)
        return Locked(locked, ArchitectureRecord(layer_count(locked), tuple(parameter_shapes(locked))))

    def certify(self, model: nn.Module, record: ArchitectureRecord) -> list[Certificate]:
        if record.layers is None or record.shapes is None:
            raise ValueError("architecture: nothing recorded; apply the lock first")
        want = {n: list(s) for n, s in record.shapes}
        have = dict(parameter_shapes(model))
        missing = sorted(set(want) - set(have))
        added = sorted(set(have) - set(want))
        reshaped = sorted(n for n in set(want) & set(have) if want[n] != have[n])
        layers = layer_count(model)
        mismatches = len(missing) + len(added) + len(reshaped) + int(layers != record.layers)
        return [
            Certificate(
                lock=self.name,
                invariant="number of mismatches against the recorded architecture (parameter names and shapes, "
                "layer count)",
                measured=float(mismatches),
                required=0.0,
                relation="==",
                proof_of_gap=(
                    "configurations with another layer count or other layer widths are not points of this "
                    "parameter space at all, so no trajectory in it reaches them"
                ),
                preservation="gradient steps update values, never shapes or the module tree",
                threat_model="training-time",
                adversary_can_remove=True,
                removal="whoever holds the weights replaces, adds or folds modules (e.g. the red team's merge or "
                "layer-injection transforms) and trains the new architecture",
                method="compare named_parameters() names and shapes, and the count of parameter-owning modules",
                details={
                    "layers_recorded": record.layers,
                    "layers_measured": layers,
                    "missing": missing,
                    "added": added,
                    "reshaped": reshaped,
                },
            )
        ]


__all__ = ["ArchitectureConfig", "ArchitectureLock", "ArchitectureRecord", "layer_count", "parameter_shapes"]
