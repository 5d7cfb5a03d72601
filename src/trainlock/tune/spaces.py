"""Search spaces: one function per tunable lock type, `space(trial, model, attack) -> lock config`, registered
with `@register_space(LOCK)` (a plugin registers its own lock's space the same way).

`attack` is the tuning task. The restricted-domain locks (sophon, repnoise, immunize) are trained against it:
that is their design (they suppress one named domain), and it is why the final numbers must come from other
tasks. The other locks never see it.

- specdef: alpha, top-k, the locking optimizer and its learning rate, epochs, the retain loss, which layers
  are locked (all, all but the classification head, the head only) and, for models with convolutions, how a
  conv kernel is read (reshaped matrix or the true operator);
- sophon: alpha, inner steps, inner optimizer and rate, suppression loss, outer rate and epochs;
- repnoise: the ascent and noise weights, rate and epochs;
- immunize: the ill- and well-conditioning weights, rate and epochs;
- spectral-cap: the cap L, with or without the head;
- sparsity: the pruned fraction and its scope.
"""

from __future__ import annotations

import torch.nn as nn

from ..locks import SPACES, SpecDefConfig, register_space, specdef_loop
from ..locks.immunize import ImmunizeConfig
from ..locks.repnoise import RepNoiseConfig
from ..locks.sophon import INNER_OPTIMIZERS, SUPPRESSIONS, SophonConfig
from ..locks.sparsity import SparsityConfig
from ..locks.spectral_cap import SpectralCapConfig
from ..tasks import Task
from ..train import LoopConfig

HEAD = r"(^|\.)(head|classifier|score)\."  # classification heads of the built-in and Hugging Face models


@register_space("specdef")
def specdef_space(trial, model: nn.Module, attack: Task) -> SpecDefConfig:
    optimizer = trial.suggest_categorical("optimizer", ["adadelta", "adam"])
    lr = (
        trial.suggest_float("lr_adadelta", 0.1, 10.0, log=True)
        if optimizer == "adadelta"
        else trial.suggest_float("lr_adam", 1e-4, 1e-2, log=True)
    )
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


def _adam_loop(trial) -> LoopConfig:
    """The outer loop of the restricted-domain locks: Adam over the authorized task."""
    return LoopConfig(
        optimizer="adam", lr=trial.suggest_float("lr", 1e-5, 1e-3, log=True), epochs=trial.suggest_int("epochs", 1, 3)
    )


@register_space("sophon")
def sophon_space(trial, model: nn.Module, attack: Task) -> SophonConfig:
    return SophonConfig(
        restricted=attack.name,
        loop=_adam_loop(trial),
        alpha=trial.suggest_float("alpha", 0.1, 0.9),
        inner_steps=trial.suggest_int("inner_steps", 1, 5),
        inner_lr=trial.suggest_float("inner_lr", 1e-4, 1e-1, log=True),
        inner_optimizer=trial.suggest_categorical("inner_optimizer", list(INNER_OPTIMIZERS)),
        suppression=trial.suggest_categorical("suppression", list(SUPPRESSIONS)),
    )


@register_space("repnoise")
def repnoise_space(trial, model: nn.Module, attack: Task) -> RepNoiseConfig:
    return RepNoiseConfig(
        restricted=attack.name,
        loop=_adam_loop(trial),
        alpha=trial.suggest_float("alpha", 0.1, 4.0, log=True),
        beta=trial.suggest_float("beta", 0.1, 4.0, log=True),
    )


@register_space("immunize")
def immunize_space(trial, model: nn.Module, attack: Task) -> ImmunizeConfig:
    return ImmunizeConfig(
        restricted=attack.name,
        loop=_adam_loop(trial),
        lam_ill=trial.suggest_float("lam_ill", 0.01, 3.0, log=True),
        lam_well=trial.suggest_float("lam_well", 0.01, 1.0, log=True),
    )


@register_space("spectral-cap")
def spectral_cap_space(trial, model: nn.Module, attack: Task) -> SpectralCapConfig:
    head = trial.suggest_categorical("head", [True, False])
    return SpectralCapConfig(
        max_sigma=trial.suggest_float("max_sigma", 0.25, 4.0, log=True), exclude=None if head else HEAD
    )


@register_space("sparsity")
def sparsity_space(trial, model: nn.Module, attack: Task) -> SparsityConfig:
    return SparsityConfig(
        fraction=trial.suggest_float("fraction", 0.2, 0.95),
        scope=trial.suggest_categorical("scope", ["global", "layer"]),
    )


__all__ = ["HEAD", "SPACES"]
