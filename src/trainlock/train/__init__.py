"""The one training loop (non-finite guard, progress bar, step-LR) and evaluation helpers."""

from .loop import LoopConfig, LoopResult, batches, clone_model, fit, resolve_device
from .metrics import accuracy, evaluate, predict

__all__ = ["LoopConfig", "LoopResult", "accuracy", "batches", "clone_model", "evaluate", "fit", "predict",
           "resolve_device"]
