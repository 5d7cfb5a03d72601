"""An example plugin: a lock of your own in one file, usable by every trainlock command.

    trainlock --plugin examples/plugins/noisy_top.py lock runs/base --out runs/noisy --spec '{"type": "noisy-top"}'
    trainlock --plugin examples/plugins/noisy_top.py verify runs/noisy
    trainlock --plugin examples/plugins/noisy_top.py redteam runs/noisy --task fashion-mnist --budget 8
    trainlock --plugin examples/plugins/noisy_top.py tune runs/base --lock noisy-top --attack-task digits ...

`noisy-top` scales each weight matrix's top-k singular directions by a seeded random factor in
[1, 1 + scale] (the function changes; a retain loss is not used). It records each weight's sigma_max after
locking and certifies that it has not dropped below that (within tol). It is a teaching example, not a
defense: an attacker who holds the weights clips the singular values back (the red team's `sv-clip`).

What a lock needs (docs/extending.md says more):
- a config dataclass of settings only (`option(default, help)`; `private=True` keeps a field out of a release);
- a record dataclass of what `apply` measured, which `certify` reads;
- `@register_lock(NAME, Config, example={...})`, `apply(...) -> Locked(model, record, report=None)`, and
  `certify(model, record) -> [Certificate(...)]`;
- optionally a `tune` search space, `@register_space(NAME)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from trainlock.config import check_float, check_int, option
from trainlock.locks import BaseLock, Certificate, Locked, find_lockable, register_lock, register_space
from trainlock.train import clone_model


@dataclass
class NoisyTopConfig:
    top_k: int = option(1, "singular directions per weight matrix that are scaled")
    scale: float = option(1.0, "each direction's singular value is multiplied by a factor drawn from [1, 1 + scale]")
    seed: int = option(0, "seed of the factors", private=True)
    tol: float = option(1e-3, "certificate: sigma_max >= (1 - tol) * the value recorded at lock time")

    def __post_init__(self):
        check_int("noisy-top", "top_k", self.top_k, 1)
        check_float("noisy-top", "scale", self.scale, 0.0)
        check_float("noisy-top", "tol", self.tol, 0.0, 1.0)


@dataclass
class NoisyTopRecord:
    sigma_max: dict = option(factory=dict, help="{weight name: sigma_max right after locking}")


def _sigma_max(model: nn.Module) -> dict[str, float]:
    out = {}
    for lk in find_lockable(model):
        w = lk.param.detach().double()
        out[lk.name] = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))
    return out


@register_lock("noisy-top", NoisyTopConfig, example={"top_k": 1, "scale": 0.5})
class NoisyTopLock(BaseLock):
    """Scale the top-k singular values of every lockable weight by seeded random factors >= 1."""

    record_cls = NoisyTopRecord

    def apply(self, model: nn.Module, retain=None, *, progress: bool = False, checkpoint=None) -> Locked:
        locked = clone_model(model)
        g = torch.Generator().manual_seed(self.cfg.seed)
        with torch.no_grad():
            for lk in find_lockable(locked):
                w = lk.param.detach().double()
                m = w.reshape(w.shape[0], -1)  # (out, in * kh * kw)
                u, s, vh = torch.linalg.svd(m, full_matrices=False)
                k = min(self.cfg.top_k, s.numel())
                s[:k] *= 1 + self.cfg.scale * torch.rand(k, generator=g, dtype=torch.float64)
                lk.param.copy_((u * s @ vh).reshape(w.shape).to(lk.param.dtype))
        return Locked(locked, NoisyTopRecord(_sigma_max(locked)))

    def certify(self, model: nn.Module, record: NoisyTopRecord) -> list[Certificate]:
        now = _sigma_max(model)
        ratios = {n: now.get(n, 0.0) / r for n, r in record.sigma_max.items() if r > 0}
        return [
            Certificate(
                lock=self.name,
                invariant="min over weights of sigma_max(W) / sigma_max recorded at lock time",
                measured=min(ratios.values(), default=0.0),
                required=1.0 - self.cfg.tol,
                relation=">=",
                proof_of_gap="none: an example lock; larger top singular values make plain SGD steps on them larger",
                preservation="none enforced: fine-tuning that lowers sigma_max shows up as a ratio below 1",
                threat_model="release-time",
                adversary_can_remove=True,
                removal="clip the singular values back (the red team's sv-clip transform)",
                method="exact SVD of each weight read as an (out, in*kh*kw) matrix",
                details={"ratios": ratios},
            )
        ]


@register_space("noisy-top")
def noisy_top_space(trial, model: nn.Module, attack) -> NoisyTopConfig:
    """What `trainlock tune --lock noisy-top` searches."""
    return NoisyTopConfig(
        top_k=trial.suggest_categorical("top_k", [1, 2]), scale=trial.suggest_float("scale", 0.1, 10.0, log=True)
    )
