"""Optimizers by name (`OPTIMIZERS`): four built in, the red team's zoo one file each, loaded on first use."""

from .base import OPTIMIZERS, STEP_MODES, ZOO, make_optimizer, options, step_mode

__all__ = ["OPTIMIZERS", "STEP_MODES", "ZOO", "make_optimizer", "options", "step_mode"]
