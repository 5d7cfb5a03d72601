"""The default suite, in priority order (a budget keeps the head of the list).

1. the foundation's plain attacks (adam 1e-3, sgd 1e-2), so the worst case includes them;
2. every adaptive weight-space transform followed by adam 1e-3;
3. a learning-rate grid for every registered optimizer (log-spaced, as in the paper's Fig. 3/4);
4. every transform followed by sgd 1e-2; a fresh head with adam; the backdoor data mode.
"""

from __future__ import annotations

from ..attacks.transforms import TRANSFORMS
from ..optimizers import OPTIMIZERS
from .spec import AttackSpec, RedTeamConfig

# Learning rates per optimizer. Appendix C of the paper uses the largest rate at which the
# unlocked base still trains (SGD/AdamW 0.1, Kron 1e-3, XMat 1e-2); the grids bracket those.
LR_GRID: dict[str, tuple[float, ...]] = {
    "sgd": (1e-3, 1e-2, 1e-1),
    "sgd-nesterov": (1e-2, 1e-1),
    "adam": (1e-4, 1e-3, 1e-2),
    "adamw": (1e-3, 1e-2, 1e-1),
    "adadelta": (0.1, 1.0),
    "adagrad": (1e-2, 1e-1),
    "rmsprop": (1e-4, 1e-3),
    "lbfgs": (0.1, 1.0),
    "psgd-kron": (1e-4, 1e-3),
    "soap": (1e-3, 1e-2),
    "muon": (2e-3, 2e-2),
    "adahessian": (1e-2, 1e-1),
    "sophia": (1e-2, 1e-1, 1.0),  # updates are clipped to lr * 0.01 per coordinate: ~100x Adam's scale
    "xmat": (1e-3, 1e-2),
    "kfac": (1e-3, 1e-2),
}
DEFAULT_LRS = (1e-3, 1e-2)  # for an optimizer registered without a grid here


def build_suite(cfg: RedTeamConfig) -> list[AttackSpec]:
    """The suite for `cfg`, deduplicated, in priority order, cut to `cfg.budget`."""
    common = dict(epochs=cfg.loop.epochs, max_steps=cfg.loop.max_steps, batch_size=cfg.loop.batch_size,
                  seed=cfg.loop.seed, target_accuracy=cfg.target_accuracy, schedule=cfg.loop.schedule)
    optimizers = [OPTIMIZERS.get(o) and o for o in cfg.optimizers] or OPTIMIZERS.names()  # get() names the valid ones
    transforms = [TRANSFORMS.get(t) and t for t in cfg.transforms] or TRANSFORMS.names()
    if any(not lr > 0 for lr in cfg.lrs):
        raise ValueError(f"learning rates must be positive, got {list(cfg.lrs)}")
    core = [o for o in ("adam", "sgd") if o in optimizers] or optimizers[:1]
    first, second = (core + core)[:2]
    lr_of = {"adam": 1e-3, "sgd": 1e-2}
    specs = [AttackSpec(o, lr_of.get(o, 1e-3), **common) for o in dict.fromkeys(core)]
    specs += [AttackSpec(first, lr_of.get(first, 1e-3), transforms=((t, {}),), **common) for t in transforms]
    for opt in optimizers:
        specs += [AttackSpec(opt, lr, **common) for lr in (cfg.lrs or LR_GRID.get(opt, DEFAULT_LRS))]
    specs += [AttackSpec(second, lr_of.get(second, 1e-3), transforms=((t, {}),), **common) for t in transforms]
    specs += [AttackSpec(first, lr_of.get(first, 1e-3), head="reset", **common),
              AttackSpec(first, lr_of.get(first, 1e-3), data="backdoor", **common)]
    seen, out = set(), []
    for s in specs:
        if s.key() not in seen and (not cfg.include or any(i in s.name for i in cfg.include)):
            seen.add(s.key())
            out.append(s)
    return out[: cfg.budget] if cfg.budget else out
