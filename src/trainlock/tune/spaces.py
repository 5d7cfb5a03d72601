"""Search spaces: one function per tunable lock type, `space(trial, model) -> lock config`.

SpecDef's: alpha, top-k, the locking optimizer and its learning rate, epochs, the retain loss, which
layers are locked (all, all but the classification head, the head only) and, for models with
convolutions, how a conv kernel is read (reshaped matrix or the true operator).
"""

from __future__ import annotations

import torch.nn as nn

from ..locks import SpecDefConfig, specdef_loop

HEAD = r"(^|\.)(head|classifier|score)\."  # classification heads of the built-in and Hugging Face models


def specdef_space(trial, model: nn.Module) -> SpecDefConfig:
    optimizer = trial.suggest_categorical("optimizer", ["adadelta", "adam"])
    lr = (trial.suggest_float("lr_adadelta", 0.1, 10.0, log=True) if optimizer == "adadelta" else
          trial.suggest_float("lr_adam", 1e-4, 1e-2, log=True))
    layers = trial.suggest_categorical("layers", ["all", "no-head", "head-only"])
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return SpecDefConfig(
        loop=specdef_loop(optimizer=optimizer, lr=lr, epochs=trial.suggest_int("epochs", 1, 3)),
        alpha=trial.suggest_float("alpha", 0.3, 0.99),
        top_k=trial.suggest_categorical("top_k", [1, 2, 4]),
        retain=trial.suggest_categorical("retain", ["ce", "kl", "ce+kl"]),
        include=HEAD if layers == "head-only" else None,
        exclude=HEAD if layers == "no-head" else None,
        conv_mode=trial.suggest_categorical("conv_mode", ["reshape", "operator"]) if has_conv else "reshape",
    )


SPACES = {"specdef": specdef_space}
