"""`spectral-cap`: sigma_max(W) <= L for every lockable weight, kept during training.

The lock factory note's "spectral lock" (Miyato et al. 2018). Its formula W -> W / ||W||_2 * L
sets sigma_max to exactly L, which would also *raise* weights below the cap; this lock instead
rescales only weights above it:

    W -> W / max(1, sigma_max(W) / L)

(a uniform shrink of the whole matrix, as spectral normalisation does; it is a feasible point but
not the Frobenius-nearest one, which would clip only the singular values above L). Convolution
kernels are read as (out, in*kh*kw) matrices, as `find_lockable`'s default "reshape" mode does;
sigma_max is the exact value from an SVD (`torch.linalg.matrix_norm(ord=2)`), not an estimate.

Enforcement during training (the lock's "preservation"): projected gradient descent, with the
projection run in two places, both in place and without gradient, parameter names unchanged
(so `state_dict`, `find_lockable` and the red team's transforms see an ordinary model):

* a forward pre-hook on each capped module projects its weight before every forward pass, so
  the forward always runs on a capped weight, even after edits made outside an optimizer;
* a global optimizer step post-hook (`torch.optim.optimizer.register_optimizer_step_post_hook`)
  projects every capped parameter that the optimizer just stepped, so the *stored* weights obey
  the cap after every step, whichever torch optimizer runs (the last step of a run included).

The hooks live on the modules (deep copies keep them); a copied module's parameters join the
step hook at its first forward pass. A torch.nn.utils.parametrize parametrization was not used:
it renames the weight to `parametrizations.weight.original`, which breaks `state_dict` loading
into a freshly built architecture and hides the weight from `find_lockable`.

`ProjectionHook` and `attach_projection` are shared with the `sparsity` lock. Anyone holding the
weights removes the hooks (`remove_projections`) or simply builds a fresh module: this is a
training-time constraint that protects one's own training run, not a release-time lock.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..config import option
from ..tasks import Task
from ..train import clone_model
from .base import BaseLock, Certificate, Locked, NoRecord, register_lock
from .lockable import find_lockable

# ------------------------------------------------------------------ shared projection machinery

# id(param) -> (weakref to the param, [(weakref to its module, a hook that projects it), ...])
_TRACKED: dict[int, tuple[weakref.ref, list[tuple[weakref.ref, ProjectionHook]]]] = {}
_STEP_HANDLE = None


class ProjectionHook:
    """A forward pre-hook that projects `module.<param_name>` in place onto a constraint set.

    Subclasses implement `project_(module, param)`. The hook object holds only plain values
    (state such as masks lives on the module as buffers), so deep copies of the module work.
    """

    def __init__(self, param_name: str):
        self.param_name = param_name

    def project_(self, module: nn.Module, param: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def project(self, module: nn.Module) -> None:
        p = getattr(module, self.param_name, None)
        if isinstance(p, nn.Parameter):  # skip tensors swapped in by functional_call and the like
            self.project_(module, p)
            _track(p, module, self)

    def __call__(self, module: nn.Module, args) -> None:
        self.project(module)


def _after_step(optimizer, args, kwargs) -> None:
    """Global optimizer step post-hook: re-project every tracked parameter the optimizer owns,
    applying its hooks in the order they were attached."""
    if not _TRACKED:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = _TRACKED.get(id(p))
            if entry is None:
                continue
            pref, hooks = entry
            if pref() is not p:
                _TRACKED.pop(id(p), None)
                continue
            with torch.no_grad():
                for mref, hook in hooks:
                    module = mref()
                    if module is not None and getattr(module, hook.param_name, None) is p:
                        hook.project_(module, p)


def _track(p: nn.Parameter, module: nn.Module, hook: ProjectionHook) -> None:
    global _STEP_HANDLE
    entry = _TRACKED.get(id(p))
    if entry is not None and entry[0]() is p:
        if any(h is hook for _, h in entry[1]):
            return
        entry[1].append((weakref.ref(module), hook))
    else:
        if len(_TRACKED) > 256:  # drop entries whose parameter is gone
            for key, (pref, _) in list(_TRACKED.items()):
                if pref() is None:
                    _TRACKED.pop(key, None)
        _TRACKED[id(p)] = (weakref.ref(p), [(weakref.ref(module), hook)])
    if _STEP_HANDLE is None:
        _STEP_HANDLE = register_optimizer_step_post_hook(_after_step)


def attach_projection(module: nn.Module, hook: ProjectionHook) -> None:
    """Register `hook` as a forward pre-hook of `module`, project once now, and track the param."""
    module.register_forward_pre_hook(hook)
    hook.project(module)


def remove_projections(model: nn.Module, kind: type = ProjectionHook) -> int:
    """Remove every projection hook of type `kind` from `model` (in place); returns how many.

    This is all it takes to lift a training-time constraint from weights one holds."""
    n = 0
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, kind):
                del module._forward_pre_hooks[key]
                p = getattr(module, hook.param_name, None)
                entry = _TRACKED.get(id(p)) if p is not None else None
                if entry is not None:
                    entry[1][:] = [(m, h) for m, h in entry[1] if h is not hook]
                n += 1
    return n


def projection_hooks(model: nn.Module, kind: type = ProjectionHook) -> list[tuple[nn.Module, ProjectionHook]]:
    """(module, hook) for every projection hook of type `kind` in `model`."""
    return [(m, h) for m in model.modules() for h in m._forward_pre_hooks.values() if isinstance(h, kind)]


# ------------------------------------------------------------------ the lock


def sigma_max(W: torch.Tensor) -> float:
    """Exact largest singular value of W read as (out, prod(rest)), in float64."""
    return float(torch.linalg.matrix_norm(W.detach().double().reshape(W.shape[0], -1), ord=2))


SLACK = 1e-6  # relative; far below the certificate's default tol (1e-4)


class SpectralCapHook(ProjectionHook):
    """W -> W / max(1, sigma_max(W) / L), in place; weights within L * (1 + SLACK) are left bit-identical
    (so a capped weight that is also frozen keeps its hash)."""

    def __init__(self, param_name: str, max_sigma: float):
        super().__init__(param_name)
        self.max_sigma = float(max_sigma)

    def project_(self, module: nn.Module, param: torch.Tensor) -> None:
        s = sigma_max(param)
        if s > self.max_sigma * (1 + SLACK):  # slack: a projected weight is a fixed point despite rounding
            param.mul_(self.max_sigma / s)


@dataclass
class SpectralCapConfig:
    """sigma_max(W) <= max_sigma for each lockable weight (find_lockable's include/exclude)."""

    max_sigma: float = option(1.0, "the cap L: sigma_max(W) <= L for every lockable weight")
    include: str | None = option(None, "regex on parameter names (default: every Linear and Conv weight)")
    exclude: str | None = option(None, "regex on parameter names to leave alone")
    tol: float = option(1e-4, "certify: sigma_max <= max_sigma * (1 + tol)")

    def __post_init__(self):
        if not (isinstance(self.max_sigma, (int, float)) and self.max_sigma > 0):
            raise ValueError(f"spectral-cap: max_sigma must be a positive number, got {self.max_sigma!r}")
        if not 0 <= self.tol < 1:
            raise ValueError(f"spectral-cap: tol must be in [0, 1), got {self.tol}")
        for key in ("include", "exclude"):
            _check_regex(f"spectral-cap: {key}", getattr(self, key))


def _check_regex(what: str, pattern: str | None) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{what} is not a valid regular expression ({pattern!r}: {e})") from None


@register_lock("spectral-cap", SpectralCapConfig, example={"max_sigma": 0.5})
class SpectralCapLock(BaseLock):
    """Cap every lockable weight's spectral norm at `max_sigma` and keep it there in training."""

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        """A copy with every selected weight projected to sigma_max <= L and the hooks attached.
        Raises ValueError (before touching anything) when the model has no selected 2-D weight."""
        find_lockable(model, self.cfg.include, self.cfg.exclude)  # fails early, on the original
        locked = clone_model(model)
        for l in find_lockable(locked, self.cfg.include, self.cfg.exclude):
            p_name = l.name.rsplit(".", 1)[-1]
            attach_projection(l.module, SpectralCapHook(p_name, self.cfg.max_sigma))
        return Locked(locked, NoRecord())

    def certify(self, model: nn.Module, record: NoRecord) -> list[Certificate]:
        L = float(self.cfg.max_sigma)
        layers = {l.name: sigma_max(l.param) for l in find_lockable(model, self.cfg.include, self.cfg.exclude)}
        worst = max(layers.values())
        return [
            Certificate(
                lock=self.name,
                invariant="max over lockable weights of sigma_max(W) (conv kernels as (out, in*kh*kw) matrices)",
                measured=worst,
                required=L * (1 + self.cfg.tol),
                relation="<=",
                proof_of_gap=(
                    f"every capped layer is {L:g}-Lipschitz, so the network's Lipschitz constant is at most the "
                    f"product of the caps (times the activations' constants); parameter regions that need a "
                    f"larger spectral norm in any capped layer are outside the constraint set"
                ),
                preservation=(
                    "projected gradient descent: a forward pre-hook and a global optimizer step post-hook rescale "
                    "W -> W / max(1, sigma_max(W)/L) after every step, so no optimizer step can leave the set"
                ),
                threat_model="training-time",
                adversary_can_remove=True,
                removal="remove the hooks (spectral_cap.remove_projections) or load the weights into a fresh "
                "module; nothing in the weights themselves enforces the cap",
                method="exact SVD (torch.linalg.matrix_norm ord=2, float64) of each weight",
                details={"max_sigma": L, "tol": self.cfg.tol, "layers": layers},
            )
        ]


__all__ = [
    "ProjectionHook",
    "SpectralCapConfig",
    "SpectralCapHook",
    "SpectralCapLock",
    "attach_projection",
    "projection_hooks",
    "remove_projections",
    "sigma_max",
]
