"""`composite`: several locks applied in order, certified together with "all" or "any" semantics.

Config: `{"mode": "all" | "any", "locks": [spec, ...]}`, each spec `{"type": NAME, **config}`.
`apply` applies the children in order (each one's output feeds the next; the retain task is
passed to all). `certify` returns every child's certificates followed by one composite
certificate: a child lock holds when all of its certificates hold; the composite claim is
"number of children holding >= len(children)" (all: the intersection of the invariant sets) or
">= 1" (any: their union).

Threat model of the composite claim: with "all" it is release-time only if every child is, and
removable if any child is (removing one breaks the conjunction); with "any" it is release-time if
some child is, and removable only if every child is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..config import from_dict, option
from ..tasks import Task
from .base import Certificate, Lock, LockDefaults, register_lock
from .factory import lock_from_spec

MODES = ("all", "any")


@dataclass
class CompositeConfig:
    mode: str = option("all", "all: every child must hold; any: at least one")
    locks: tuple = option((), "the children: ({'type': NAME, **config}, ...)")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"composite: mode must be one of {MODES}, got {self.mode!r}")
        if not self.locks or not isinstance(self.locks, (list, tuple)) or not all(isinstance(s, dict) for s in self.locks):
            raise ValueError("composite: 'locks' must list at least one lock spec {'type': NAME, ...}, got "
                             f"{self.locks!r}")


@register_lock
class CompositeLock(LockDefaults):
    name = "composite"

    def __init__(self, config: CompositeConfig):
        self.mode = config.mode
        self.children: list[Lock] = [lock_from_spec(dict(s)) for s in config.locks]

    @classmethod
    def from_config(cls, data: dict) -> "CompositeLock":
        return cls(from_dict(CompositeConfig, dict(data)))

    def config(self) -> dict:
        return {"mode": self.mode, "locks": [{"type": c.name, **c.config()} for c in self.children]}

    def use_tasks(self, *tasks: Task) -> "CompositeLock":
        """Hand Task objects to every child that takes them (the energy lock)."""
        for c in self.children:
            c.use_tasks(*tasks)
        return self

    def apply(self, model: nn.Module, retain: Task | None = None) -> nn.Module:
        for child in self.children:
            child.progress = self.progress
            model = child.apply(model, retain)
        return model

    def report(self):
        """The first child's run report (a composite of one training lock reports that lock's run)."""
        return next((r for r in (c.report() for c in self.children) if r is not None), None)

    def certify(self, model: nn.Module) -> list[Certificate]:
        certs: list[Certificate] = []
        per_child = []
        for child in self.children:
            cs = child.certify(model)
            certs.extend(cs)
            per_child.append((child.name, cs))
        holding = [all(c.holds for c in cs) for _, cs in per_child]
        release = [all(c.threat_model == "release-time" for c in cs) for _, cs in per_child]
        removable = [any(c.adversary_can_remove for c in cs) for _, cs in per_child]
        if self.mode == "all":
            required, threat, can_remove = len(per_child), all(release), any(removable)
        else:
            required, threat, can_remove = 1, any(release), all(removable)
        names = [n for n, _ in per_child]
        certs.append(Certificate(
            lock=self.name,
            invariant=f"number of child locks whose certificates all hold (mode {self.mode!r}: "
                      f"{'every child' if self.mode == 'all' else 'at least one child'})",
            measured=float(sum(holding)),
            required=float(required),
            relation=">=",
            proof_of_gap=("the intersection of the children's invariant sets: each child's gap applies"
                          if self.mode == "all" else
                          "the union of the children's invariant sets: the gap of a child that holds applies"),
            preservation="as each child's preservation argument says",
            threat_model="release-time" if threat else "training-time",
            adversary_can_remove=bool(can_remove),
            removal=("remove any one removable child: " if self.mode == "all" else "remove every child: ")
                    + "; ".join(f"{n}: {cs[0].removal}" for n, cs in per_child if cs),
            method="combine the children's certificates",
            details={"mode": self.mode, "children": names, "holding": holding},
        ))
        return certs



__all__ = ["CompositeConfig", "CompositeLock"]
