"""Locks. Each lock lives in its own module and registers by name (`LOCKS`); `lock_factory` builds
one from a spec (dict, list or JSON / YAML file)."""

from . import (  # noqa: F401
    architecture,
    composite,
    dlr,
    energy,
    fresh_distill,
    frozen,
    immunize,
    repnoise,
    sophon,
    sparsity,
    specdef_reparam,
    spectral_cap,
)
from .base import LOCKS, Certificate, Lock, LockDefaults, register_lock
from .factory import lock_factory, lock_from_meta
from .lockable import Lockable, find_lockable, sigma_report
from .specdef import LockReport, SpecDefConfig, SpecDefLock, specdef, specdef_loop, spectral_term

__all__ = [
    "LOCKS", "Certificate", "Lock", "LockDefaults", "Lockable", "LockReport", "SpecDefConfig", "SpecDefLock",
    "find_lockable", "lock_factory", "lock_from_meta", "register_lock", "sigma_report", "specdef", "specdef_loop",
    "spectral_term",
]
