"""Watch locks during training: the first step at which each certificate stops holding.

    monitor = LockMonitor([frozen_lock, cap_lock], every=10, model=model)
    fit(model, task, cfg, hooks=LoopHooks(on_step=monitor))            # or call monitor(step) in any loop
    monitor.first_broken   # {"frozen: max |W - W0| over frozen parameters": 10, ...}

`LockMonitor` is a plain callable with fit's on_step signature, `monitor(step, loss=None,
extras=None)`, so it works in any training loop. Every `every` steps it re-certifies and records,
per certificate (keyed "lock: invariant"), whether it holds; `first_broken` maps each certificate
to the first checked step at which it did not hold (a certificate is only checked every `every`
steps, so the true break happened in (previous check, recorded step]). With `stop_on_break=True`
the call returns True once anything is broken, which stops `fit`.

What it certifies: a lock object (anything with `certify(model)`), a list of them, or a callable.
Locks need the model: pass `model=` or call `bind(model)` (`finetune(..., monitor=m)` binds its
own training copy). A callable is called as `fn(model)` when a model is bound, else `fn()`, and
returns Certificates (or dicts with "lock", "invariant", "holds" and optionally "measured").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch.nn as nn

__all__ = ["LockMonitor"]


def _as_record(cert: Any) -> tuple[str, bool, float | None]:
    if isinstance(cert, dict):
        lock, inv, holds, measured = cert.get("lock"), cert.get("invariant"), cert.get("holds"), cert.get("measured")
    else:
        lock, inv = getattr(cert, "lock", None), getattr(cert, "invariant", None)
        holds, measured = getattr(cert, "holds", None), getattr(cert, "measured", None)
    if holds is None:
        raise ValueError(f"a certificate without 'holds': {cert!r}")
    try:
        measured = None if measured is None else float(measured)
    except (TypeError, ValueError):
        measured = None
    return f"{lock}: {inv}", bool(holds), measured


class LockMonitor:
    """Re-certify every `every` steps; record the first step each certificate breaks."""

    def __init__(
        self,
        locks_or_certify_fn: Any | Iterable[Any] | Callable,
        every: int = 1,
        stop_on_break: bool = False,
        model: nn.Module | None = None,
    ):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.every = int(every)
        self.stop_on_break = bool(stop_on_break)
        self.model = model
        src = locks_or_certify_fn
        if hasattr(src, "certify"):
            self._locks, self._fn = [src], None
        elif callable(src):
            self._locks, self._fn = None, src
        else:
            locks = list(src)
            if not locks or not all(hasattr(l, "certify") for l in locks):
                raise TypeError("expected a lock, a non-empty list of locks, or a callable returning certificates")
            self._locks, self._fn = locks, None
        self.first_broken: dict[str, int] = {}
        self.history: list[dict] = []
        self.stopped_at: int | None = None

    def bind(self, model: nn.Module) -> LockMonitor:
        """Certify this model from now on (e.g. the copy a fine-tuning attack trains)."""
        self.model = model
        return self

    def certify(self) -> list:
        if self._fn is not None:
            return list(self._fn(self.model) if self.model is not None else self._fn())
        if self.model is None:
            raise RuntimeError("LockMonitor has locks but no model: pass model= or call bind(model)")
        was_training = self.model.training
        try:
            return [c for lock in self._locks for c in lock.certify(self.model)]
        finally:
            self.model.train(was_training)

    def check(self, step: int, loss: float | None = None) -> bool:
        """Re-certify now and record; returns True when some certificate does not hold."""
        holds: dict[str, bool] = {}
        measured: dict[str, float | None] = {}
        for cert in self.certify():
            key, ok, value = _as_record(cert)
            base, n = key, 2
            while key in holds:  # the same lock and invariant twice (two configs): keep both
                key, n = f"{base} [{n}]", n + 1
            holds[key], measured[key] = ok, value
            if not ok and key not in self.first_broken:
                self.first_broken[key] = int(step)
        broken = [k for k, ok in holds.items() if not ok]
        self.history.append(
            {
                "step": int(step),
                "loss": None if loss is None else float(loss),
                "holds": holds,
                "measured": measured,
                "all_hold": not broken,
            }
        )
        return bool(broken)

    def __call__(self, step: int, loss: float | None = None, extras: dict | None = None) -> bool | None:
        """fit's on_step: check every `every` steps; True (stop) on a break when stop_on_break."""
        if step % self.every != 0:
            return None
        broken = self.check(step, loss)
        if broken and self.stop_on_break:
            if self.stopped_at is None:
                self.stopped_at = int(step)
            return True
        return None

    @property
    def broken(self) -> bool:
        return bool(self.first_broken)

    def summary(self) -> dict:
        """JSON-ready: every, first_broken, the number of checks, and the last check."""
        return {
            "every": self.every,
            "first_broken": dict(self.first_broken),
            "checks": len(self.history),
            "last": self.history[-1] if self.history else None,
            "stopped_at": self.stopped_at,
        }
