"""trainlock: lock open-weight models against unauthorized fine-tuning, certify, and attack the lock.

    import trainlock as tl
    model, meta = tl.load("runs/base")
    res = tl.lock(model, tl.SpecDefConfig(alpha=0.5, top_k=1), retain="mnist")
    result = tl.attack(res.model, tl.FineTuneConfig(loop=tl.LoopConfig(optimizer="adam", lr=1e-3)),
                       task="fashion-mnist")

Names are exported lazily: `import trainlock` loads none of the red team, the optimizer zoo or the
analysis modules until one of their names is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> module that defines it (relative to this package)
_EXPORTS = {
    "lock": "api",
    "attack": "api",
    "LockResult": "api",
    "load": "io.artifacts",
    "save": "io.artifacts",
    "ArtifactError": "io.artifacts",
    "AttackResult": "attacks",
    "FineTuneConfig": "attacks",
    "LockReport": "locks",
    "SpecDefConfig": "locks",
    "specdef_loop": "locks",
    "lock_factory": "locks",
    "RedTeamConfig": "red_team",
    "redteam": "red_team.core",
    "SpectralState": "linalg.spectral",
    "conv_singular_values": "linalg.spectral",
    "top_singular_values": "linalg.spectral",
    "hessian_eigenvalues": "linalg.curvature",
    "theorem_check": "analysis.bounds",
    "LoopConfig": "train",
    "evaluate": "train",
    "verify": "certify.verify",
}
_SUBMODULES = (
    "models",
    "tasks",
    "api",
    "locks",
    "attacks",
    "train",
    "io",
    "linalg",
    "certify",
    "analysis",
    "paper",
    "optimizers",
    "config",
    "registry",
    "plugins",
    "red_team",
    "tune",
)

__all__ = ["__version__", *sorted(_EXPORTS), *_SUBMODULES]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'trainlock' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import (  # noqa: F401
        analysis,
        api,
        attacks,
        certify,
        config,
        io,
        linalg,
        locks,
        models,
        optimizers,
        paper,
        plugins,
        red_team,
        registry,
        tasks,
        train,
    )
    from .analysis.bounds import theorem_check  # noqa: F401
    from .api import LockResult, attack, lock  # noqa: F401
    from .attacks import AttackResult, FineTuneConfig  # noqa: F401
    from .certify.verify import verify  # noqa: F401
    from .io.artifacts import ArtifactError, load, save  # noqa: F401
    from .linalg.curvature import hessian_eigenvalues  # noqa: F401
    from .linalg.spectral import SpectralState, conv_singular_values, top_singular_values  # noqa: F401
    from .locks import LockReport, SpecDefConfig, lock_factory, specdef_loop  # noqa: F401
    from .red_team import RedTeamConfig  # noqa: F401
    from .red_team.core import redteam  # noqa: F401
    from .train import LoopConfig, evaluate  # noqa: F401
