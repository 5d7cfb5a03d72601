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

from ..config import option
from ..tasks import Task
from ..train import Checkpoint
from .base import LOCKS, BaseLock, Certificate, Lock, Locked, RecordedLock, register_lock
from .factory import lock_from_spec, split_legacy

MODES = ("all", "any")


@dataclass
class CompositeConfig:
    mode: str = option("all", "all: every child must hold; any: at least one")
    locks: tuple = option((), "the children: ({'type': NAME, **config}, ...)")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"composite: mode must be one of {MODES}, got {self.mode!r}")
        if (
            not self.locks
            or not isinstance(self.locks, (list, tuple))
            or not all(isinstance(s, dict) for s in self.locks)
        ):
            raise ValueError(
                f"composite: 'locks' must list at least one lock spec {{'type': NAME, ...}}, got {self.locks!r}"
            )


@dataclass
class CompositeRecord:
    children: tuple = option((), "each child's record, in order")


@register_lock(
    "composite",
    CompositeConfig,
    example={"mode": "all", "locks": [{"type": "frozen", "names": ["bias"]}, {"type": "architecture"}]},
)
class CompositeLock(BaseLock):
    record_cls = CompositeRecord

    def __init__(self, config: CompositeConfig | None = None):
        super().__init__(config or CompositeConfig(locks=({"type": "architecture"},)))
        self.children: list[Lock] = [lock_from_spec(dict(s)) for s in self.cfg.locks]

    def config(self) -> dict:
        return {"mode": self.cfg.mode, "locks": [{"type": c.name, **c.config()} for c in self.children]}

    @classmethod
    def split_legacy(cls, config: dict) -> tuple[dict, dict]:
        """Composites written before records: each child's spec held its measured values."""
        specs, records = [], []
        for spec in config.get("locks") or ():
            child = dict(spec)
            kind = child.pop("type")
            child, rec = split_legacy(LOCKS.get(kind), child)
            specs.append({"type": kind, **child})
            records.append(rec)
        return {**config, "locks": specs}, {"children": records}

    def record_to_dict(self, record: CompositeRecord) -> dict:
        return {"children": [c.record_to_dict(r) for c, r in zip(self.children, record.children, strict=True)]}

    def record_from_dict(self, data: dict | None) -> CompositeRecord:
        kids = list((data or {}).get("children") or ())
        if len(kids) != len(self.children):
            raise ValueError(f"composite: {len(kids)} child records for {len(self.children)} child locks")
        return CompositeRecord(tuple(c.record_from_dict(r) for c, r in zip(self.children, kids, strict=True)))

    def use_tasks(self, *tasks: Task) -> CompositeLock:
        """Hand Task objects to every child that takes them (the energy lock)."""
        for c in self.children:
            c.use_tasks(*tasks)
        return self

    def apply(
        self,
        model: nn.Module,
        retain: Task | None = None,
        *,
        progress: bool = False,
        checkpoint: Checkpoint | None = None,
    ) -> Locked:
        """Each child in order, each on the previous one's output. The report is the first child's that trains
        (a composite of one training lock reports that lock's run)."""
        records, report = [], None
        for child in self.children:
            out = child.apply(model, retain, progress=progress, checkpoint=checkpoint)
            model, report = out.model, report or out.report
            records.append(out.record)
        return Locked(model, CompositeRecord(tuple(records)), report)

    def certify(self, model: nn.Module, record: CompositeRecord) -> list[Certificate]:
        certs: list[Certificate] = []
        per_child = []
        for child, rec in zip(self.children, record.children, strict=True):
            cs = child.certify(model, rec)
            certs.extend(cs)
            per_child.append((child.name, cs))
        holding = [all(c.holds for c in cs) for _, cs in per_child]
        release = [all(c.threat_model == "release-time" for c in cs) for _, cs in per_child]
        removable = [any(c.adversary_can_remove for c in cs) for _, cs in per_child]
        if self.cfg.mode == "all":
            required, threat, can_remove = len(per_child), all(release), any(removable)
        else:
            required, threat, can_remove = 1, any(release), all(removable)
        names = [n for n, _ in per_child]
        certs.append(
            Certificate(
                lock=self.name,
                invariant=f"number of child locks whose certificates all hold (mode {self.cfg.mode!r}: "
                f"{'every child' if self.cfg.mode == 'all' else 'at least one child'})",
                measured=float(sum(holding)),
                required=float(required),
                relation=">=",
                proof_of_gap=(
                    "the intersection of the children's invariant sets: each child's gap applies"
                    if self.cfg.mode == "all"
                    else "the union of the children's invariant sets: the gap of a child that holds applies"
                ),
                preservation="as each child's preservation argument says",
                threat_model="release-time" if threat else "training-time",
                adversary_can_remove=bool(can_remove),
                removal=("remove any one removable child: " if self.cfg.mode == "all" else "remove every child: ")
                + "; ".join(f"{n}: {cs[0].removal}" for n, cs in per_child if cs),
                method="combine the children's certificates",
                details={"mode": self.cfg.mode, "children": names, "holding": holding},
            )
        )
        return certs


def composite_of(locks: list[RecordedLock], mode: str = "all") -> RecordedLock:
    """Several recorded locks as one recorded composite (a model directory with several lock entries)."""
    lock = CompositeLock(CompositeConfig(mode=mode, locks=tuple({"type": r.name, **r.lock.config()} for r in locks)))
    return RecordedLock(lock, CompositeRecord(tuple(r.record for r in locks)))


__all__ = ["CompositeConfig", "CompositeLock", "CompositeRecord", "composite_of"]
