"""The suite, planned in stages so that a budget cut keeps the strongest plain attacks whatever its size.

1. coverage: the core optimizers (adam, sgd) over the core learning rates (1e-4, 1e-3, 1e-2, or
   `--lrs`) on the released weights, and the same grid from scratch (the architecture
   re-initialized: an attacker can always ignore the weights), then the probe (logistic regression on the
   frozen features, and its twin on fresh ones). Any budget of 2 x 2 x 3 + 2 = 14 runs or more holds all of
   them, so the worst case is at least their best.
2. probes: every other optimizer family over its own learning-rate grid, each run a quarter of the
   step budget (successive halving's first rung).
3. full runs: each probed family at the learning rate its probes found best, with the whole budget, and the
   same run from scratch (the baseline gets every optimizer the attacker gets).
4. adaptive: every weight-space transform followed by the two best (optimizer, learning rate) pairs
   found so far, sv-clip reading the lock's private record (marked insider), distillation into a
   fresh student, LoRA (rank 8, at the best rate and at 10x it: adapters often want a larger one), a fresh
   head, and the backdoor data mode.

Stages 3 and 4 depend on results: `build_suite(cfg, rows)` plans with the rows at hand (before any,
it assumes adam 1e-3 and sgd 1e-2 and the middle of each grid), and `redteam` re-plans after each
stage. The budget counts runs in this order, probes included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..attacks import stages as attack_stages
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
CORE = ("adam", "sgd")
CORE_LRS = (1e-4, 1e-3, 1e-2)
STAGES = ("coverage", "probes", "full", "adaptive")


def _best(rows: dict[str, dict], specs: list[AttackSpec]) -> AttackSpec | None:
    """The spec whose row has the highest accuracy (None when none has finished)."""
    done = [(rows[s.key()].get("accuracy"), i, s) for i, s in enumerate(specs) if s.key() in rows]
    done = [d for d in done if d[0] is not None]
    return max(done, key=lambda d: (d[0], -d[1]))[2] if done else None


def plan(
    cfg: RedTeamConfig, rows: list[dict] | None = None, steps_per_run: int | None = None, backdoor: dict | None = None
) -> list[tuple[str, AttackSpec]]:
    """(stage, spec) in priority order, deduplicated and filtered by `cfg.include`, not cut to the budget.

    `steps_per_run`: the step budget of one full run (for the probes' quarter); without it the probes are
    full runs. `backdoor`: a calibration (`attacks.backdoor.calibrate` on the unlocked base) whose poison
    fraction and step budget the backdoor run uses."""
    done = {r["key"]: r for r in rows or ()}
    common = {
        "epochs": cfg.loop.epochs,
        "max_steps": cfg.loop.max_steps,
        "batch_size": cfg.loop.batch_size,
        "seed": cfg.loop.seed,
        "target_accuracy": cfg.target_accuracy,
        "schedule": cfg.loop.schedule,
        "epoch_curve": cfg.epoch_curve,
    }
    optimizers = [OPTIMIZERS.get(o) and o for o in cfg.optimizers] or OPTIMIZERS.names()  # get() names the valid ones
    transforms = [TRANSFORMS.get(t) and t for t in cfg.transforms] or TRANSFORMS.names()
    if any(not lr > 0 for lr in cfg.lrs):
        raise ValueError(f"learning rates must be positive, got {list(cfg.lrs)}")
    core = [o for o in CORE if o in optimizers] or optimizers[:1]
    core_lrs = tuple(cfg.lrs) or CORE_LRS
    out: list[tuple[str, AttackSpec]] = []
    coverage = [AttackSpec.of(o, lr, **common) for o in core for lr in core_lrs]
    out += [("coverage", s) for s in coverage]
    out += [("coverage", AttackSpec.of(o, lr, start="scratch", **common)) for o in core for lr in core_lrs]
    usual = {"adam": 1e-3, "sgd": 1e-2}  # before any result: the usual rate when the grid has it, else its middle

    def default_lr(o: str) -> float:
        return usual[o] if usual.get(o) in core_lrs else core_lrs[len(core_lrs) // 2]

    if "probe" in attack_stages.STAGES["train"]:  # logistic regression on the frozen features: no optimizer step,
        # the cheapest strong attack (on a pretrained vision model the strongest): no budget cut leaves it out
        out.append(("coverage", AttackSpec.of(core[0], default_lr(core[0]), train="probe", **common)))

    others = [o for o in optimizers if o not in core]
    probe_steps = max(1, steps_per_run // 4) if steps_per_run else None
    full: list[AttackSpec] = []
    for opt in others:
        grid = tuple(cfg.lrs) or LR_GRID.get(opt, DEFAULT_LRS)
        if probe_steps is None or len(grid) == 1:
            full += [AttackSpec.of(opt, lr, **common) for lr in grid]
            continue
        probes = [AttackSpec.of(opt, lr, **{**common, "max_steps": probe_steps}) for lr in grid]
        out += [("probes", s) for s in probes]
        best = _best(done, probes)
        full.append(AttackSpec.of(opt, best.loop.lr if best else grid[len(grid) // 2], **common))
    out += [("full", s) for s in full]
    # the same runs from scratch: the baseline gets every optimizer the attack gets (at the rate the probes chose
    # on the released weights), so an uplift over scratch is never a stronger optimizer's against a weaker one's
    out += [("full", AttackSpec.of(s.loop.optimizer, s.loop.lr, start="scratch", **common)) for s in full]

    plain = coverage + full
    ranked = sorted(
        (s for s in plain if done.get(s.key(), {}).get("accuracy") is not None),
        key=lambda s: -done[s.key()]["accuracy"],
    )
    tops = ranked[:2] or [AttackSpec.of(o, default_lr(o), **common) for o in core]
    first = tops[0]

    def best(**fields) -> AttackSpec:  # the best plain run's optimizer and rate, and `fields`
        return AttackSpec.of(first.loop.optimizer, first.loop.lr, **{**common, **fields})

    for t in transforms:
        out += [("adaptive", AttackSpec.of(s.loop.optimizer, s.loop.lr, transforms=((t, {}),), **common)) for s in tops]
    if "reinit" in transforms:  # beside the head (the default): the last block, the two most inflated layers
        out += [
            ("adaptive", best(transforms=(("reinit", o),)))
            for o in ({"what": "last", "n": 1}, {"what": "inflated", "n": 2})
        ]
    if "sv-clip" in transforms:  # the insider variant, marked as such in the reports
        out.append(("adaptive", best(transforms=(("sv-clip", {"use_record": True}),))))
    lora = {"train": "lora", "options": {"lora": {"rank": 8}}}  # low-rank adapters: the usual rate and 10x it
    out += [
        ("adaptive", best(start="distill")),
        ("adaptive", best(**lora)),
        ("adaptive", AttackSpec.of(first.loop.optimizer, 10 * first.loop.lr, **{**common, **lora})),
        ("adaptive", best(head="reset")),
        ("adaptive", _backdoor(best, backdoor)),
    ]
    out += [("adaptive", best(**attack_stages.example(kind, name))) for kind, name in plugin_stages()]
    seen, kept = set(), []
    for stage, s in out:
        if s.key() not in seen and (not cfg.include or any(i in s.name for i in cfg.include)):
            seen.add(s.key())
            kept.append((stage, s))
            t = scratch_twin(s)  # right behind its attack: a budget cut keeps the pair
            if t is not None and t.key() not in seen:
                seen.add(t.key())
                kept.append((stage, t))
    return kept


def scratch_twin(spec: AttackSpec) -> AttackSpec | None:
    """The matched reference run of an attack: the same architecture from scratch, trained by the same train stage
    (fine-tuning, LoRA, the probe) with the same optimizer, rate, schedule, step and batch budget and seed (None
    for a run from scratch itself)."""
    if spec.start == "scratch":
        return None
    options = {spec.train: spec.options[spec.train]} if spec.train in spec.options else {}
    return AttackSpec(
        start="scratch", train=spec.train, options=options, finetune=dataclasses.replace(spec.finetune, head="auto")
    )


def matched(specs: list[AttackSpec]) -> list[AttackSpec]:
    """`specs` with the scratch twin of every attack among them (those a budget cut left out appended)."""
    keys = {s.key() for s in specs}
    twins = [t for t in map(scratch_twin, specs) if t is not None and t.key() not in keys]
    return specs + list({t.key(): t for t in twins}.values())


def plugin_stages() -> list[tuple[str, str]]:
    """(kind, name) of every start, data, train and fold stage a plugin registered: each joins the suite with its
    registered example (a plugin's transforms join as every transform does)."""
    registries = attack_stages.STAGES
    return [
        (kind, name)
        for kind in attack_stages.KINDS
        if kind != "transforms"
        for name in registries[kind].names()
        if registries[kind].origin(name)
    ]


def _backdoor(best: Callable[..., AttackSpec], cal: dict | None) -> AttackSpec:
    """The backdoor run: at the setting calibrated on the unlocked base when there is one."""
    if not cal:
        return best(data="backdoor")
    return best(
        data="backdoor",
        options={"backdoor": {"poison_fraction": cal["poison_fraction"]}},
        max_steps=cal["max_steps"],
        epochs=cal["epochs"],
    )


def build_suite(
    cfg: RedTeamConfig, rows: list[dict] | None = None, steps_per_run: int | None = None
) -> list[AttackSpec]:
    """The planned suite (see `plan`), cut to `cfg.budget`."""
    specs = [s for _, s in plan(cfg, rows, steps_per_run)]
    return matched(specs[: cfg.budget]) if cfg.budget else specs
