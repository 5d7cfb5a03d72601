"""Locks. Each lock lives in its own module and registers by name with its config (`@register_lock(NAME,
Config)` into `LOCKS`); `lock_factory` builds one from a spec (dict, list or JSON / YAML file)."""

from . import (  # noqa: F401  (importing each module registers its lock)
    architecture,
    composite,
    dlr,
    energy,
    fresh_distill,
    frozen,
    immunize,
    mlac,
    probe_adversary,
    repnoise,
    sophon,
    sparsity,
    specdef_reparam,
    spectral_cap,
    undo,
)
from .base import (
    LOCKS,
    SPACES,
    BaseLock,
    Certificate,
    Lock,
    Locked,
    LockReport,
    NoRecord,
    RecordedLock,
    TaskLock,
    register_lock,
    register_space,
)
from .factory import lock_factory, lock_from_meta
from .lockable import Lockable, find_lockable, sigma_report
from .specdef import SpecDefConfig, SpecDefLock, specdef, specdef_loop, spectral_term

__all__ = [
    "LOCKS",
    "SPACES",
    "BaseLock",
    "Certificate",
    "Lock",
    "LockReport",
    "Lockable",
    "Locked",
    "NoRecord",
    "RecordedLock",
    "SpecDefConfig",
    "SpecDefLock",
    "TaskLock",
    "find_lockable",
    "lock_factory",
    "lock_from_meta",
    "register_lock",
    "register_space",
    "sigma_report",
    "specdef",
    "specdef_loop",
    "spectral_term",
]
