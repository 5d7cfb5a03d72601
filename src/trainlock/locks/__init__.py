"""Locks. Each lock lives in its own module and registers by name."""

from .lockable import Lockable, find_lockable, sigma_report
from .specdef import LockReport, SpecDefConfig, specdef, spectral_term

__all__ = ["Lockable", "LockReport", "SpecDefConfig", "find_lockable", "sigma_report", "specdef", "spectral_term"]
