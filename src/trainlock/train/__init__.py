"""The one training loop (non-finite guard, progress bar, step-LR) and evaluation helpers."""

from .loop import LoopConfig, LoopResult, accuracy, batches, clone_model, evaluate, fit, predict, resolve_device

__all__ = ["LoopConfig", "LoopResult", "accuracy", "batches", "clone_model", "evaluate", "fit", "predict",
           "resolve_device"]
