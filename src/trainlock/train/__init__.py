"""The one training loop (non-finite guard, progress bar, step-LR) and evaluation helpers."""

from .batchnorm import batchnorms, recalibrate_batchnorm
from .checkpoint import Checkpoint, CheckpointError
from .loop import LoopConfig, LoopHooks, LoopResult, batches, clone_model, fit, reinitialized, resolve_device
from .metrics import accuracy, evaluate, predict

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "LoopConfig",
    "LoopHooks",
    "LoopResult",
    "accuracy",
    "batches",
    "batchnorms",
    "clone_model",
    "evaluate",
    "fit",
    "predict",
    "recalibrate_batchnorm",
    "reinitialized",
    "resolve_device",
]
