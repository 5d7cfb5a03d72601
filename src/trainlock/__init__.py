"""trainlock: lock open-weight models against unauthorized fine-tuning, certify, and attack the lock.

    import trainlock as tl
    model, meta = tl.load("runs/base")
    locked = tl.lock(model, tl.SpecDefConfig(alpha=0.5, top_k=1), retain=tl.tasks.get("mnist"))
    result = tl.attack(locked, tl.FineTuneConfig(optimizer="adam", lr=1e-3), task=tl.tasks.get("fashion-mnist"))
"""

from . import models, tasks
from ._version import __version__
from .api import attack, lock, lock_report
from .io.artifacts import ArtifactError, load, save
from .attacks import AttackResult, FineTuneConfig
from .locks import LockReport, SpecDefConfig
from .redteam import RedTeamConfig, redteam
from .linalg.spectral import SpectralState, conv_singular_values, top_singular_values
from .linalg.curvature import hessian_eigenvalues
from .analysis.bounds import theorem_check
from .train.loop import LoopConfig, evaluate

__all__ = [
    "__version__", "models", "tasks", "attack", "lock", "lock_report", "load", "save", "ArtifactError",
    "AttackResult", "FineTuneConfig", "RedTeamConfig", "redteam", "LockReport", "SpecDefConfig", "SpectralState",
    "conv_singular_values", "top_singular_values", "LoopConfig", "evaluate", "hessian_eigenvalues",
    "theorem_check",
]
