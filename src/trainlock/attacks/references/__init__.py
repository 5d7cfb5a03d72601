"""Reference attackers, one per file, registered by name (see base.py). Importing this package registers the
built-in ones."""

from . import alternative, classical  # noqa: F401  (registers)
from .base import (
    REFERENCES,
    Reference,
    ReferenceRun,
    ReferenceTarget,
    best_reference,
    check_reference,
    register_reference,
    run_reference,
    split_reference,
)

__all__ = [
    "REFERENCES",
    "Reference",
    "ReferenceRun",
    "ReferenceTarget",
    "best_reference",
    "check_reference",
    "register_reference",
    "run_reference",
    "split_reference",
]
