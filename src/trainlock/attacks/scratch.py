"""The from-scratch baseline: the same architecture re-initialized, attacked with the same optimizer, data
and step budget. It is one reference attacker among others (`attacks/references`): a lock
protects something only where the released weights beat the best of them.
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn

from ..tasks import Task
from ..train import reinitialized
from .finetune import AttackResult, FineTuneConfig, finetune

__all__ = ["reinitialized", "scratch_baseline"]  # reinitialized lives in train (locks use it too)


def scratch_baseline(
    model: nn.Module, cfg: FineTuneConfig, task: Task, progress: bool = False, lrs: tuple[float, ...] = ()
) -> AttackResult:
    """The attack `cfg` on `model`'s architecture re-initialized (seed = the attack's seed). With `lrs`, the
    best of the runs at `cfg`'s learning rate and at each of `lrs` (a fresh model often wants a larger rate
    than a pretrained one; the baseline must be the attacker's best, not the attack's own setting); its
    `config` names the learning rate that won."""
    fresh = reinitialized(model, cfg.loop.seed)
    best = None
    for lr in dict.fromkeys((cfg.loop.lr, *lrs)):
        run_cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, lr=float(lr)))
        res = finetune(fresh, run_cfg, task, progress=progress)
        if best is None or res.accuracy > best.accuracy:
            best = res
    return best
