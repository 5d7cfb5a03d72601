"""`undo`: distill the base into a partly noised copy of itself (UNDO, Lee et al. 2025, "Distillation
Robustifies Unlearning", arXiv 2506.06278), written from the paper's description.

The paper's finding: a network trained only to imitate a model's outputs inherits its behaviour but not its
latent capabilities, and the less of the original weights the student starts from, the less it inherits.
UNDO (Unlearn, Noise, Distill-on-Outputs) makes that a dial. Here the student starts at

    theta_0 = (1 - noise) * theta_base + noise * theta_fresh

theta_fresh the architecture's own re-initialization (every module's `reset_parameters`, a seed: the start of
`fresh-distill`), and is distilled on the authorized task's inputs exactly as `fresh-distill` does (its loop,
`T^2 KL + ce_weight * CE`, `keep`, `data`, `augment`: `trainlock.locks.fresh_distill.distill`). noise=0 starts
at the base (a plain self-distillation), noise=1 is fresh-distill; in between, utility is cheaper to keep
and less of the base is left to exploit.

Differences from the paper: (1) no unlearning step: the teacher is the base itself, and what should not
transfer is kept out only by distilling on the authorized task's inputs (a composite that applies a
restricted-domain lock first, e.g. `[{"type": "repnoise", ...}, {"type": "undo", ...}]`, comes closer to the
paper's recipe); (2) the noise is the weighted average with a random initialization that the paper describes,
the random part at the architecture's own initialization scale (no further scale factor: `noise` is the only
dial); (3) the paper distills on broad pretraining-like data, this lock on the authorized task's inputs (or
the `data` task's), optionally augmented; (4) `profile: depth` (ours) puts the same mean noise where a
network's transferable, task-level features live: a linear ramp over the tensors from the input (least noise)
to the output (most). The hypothesis: the early layers' generic features are what the authorized task costs
most to relearn and what an attacker's reference (a small CNN from scratch) learns anyway, while the deep
layers hold the pretrained lead; so at equal mean noise, depth should keep more utility for the same uplift.

The noise seed is a secret. Whoever knows it and `noise` computes (theta - noise * theta_fresh) / (1 - noise)
= theta_base + Delta / (1 - noise) (Delta: the distillation's update), the base up to the training. It is
therefore never written to the public record: a configured `seed` is a private field (`trainlock release`
drops it) and a drawn one goes only to the owner's run report (the model directory's "lock" entry, also
dropped by release). It is not a strong secret: torch's CPU generator keeps 32 bits of a seed, so a search
over 2^32 seeds for the initialization that correlates with the released weights finds it; the certificate
says so (`removal`).

Certificate (weights only, like fresh-distill's): for every noised weight (2-D and up, not kept, moved by the
noise), the fraction of the noised start's cosine gap to the base that the distillation closed,

    (|cos(W, W_base)| - c0) / (1 - c0),   c0 = cos(W_start, W_base),

both cosines estimated with the same seeded 256-bucket count sketch of the base weight recorded at lock time,
is at most `max_closed`. The base's own weights close all of the gap (1), so they fail whenever max_closed < 1
and some weight was moved (c0 < 1 - MIN_GAP). A fixed additive slack would not do: distilling toward the base
walks the weights back toward it by an amount that grows with the gap (0.1 in cosine at noise 0.8 on the tests'
MLP), while at a low noise the whole gap is smaller than any useful slack. The dial is in parameter space: a
trained base whose weights outgrew their initialization keeps a cosine near 1 at noise 0.5 (the recorded c0
says how much of the base the start still held). Weights the noise did not move (kept, or not reset by any
module) are listed, not certified; with none moved (noise 0) the certificate holds and claims nothing. It
claims nothing about what the released weights can learn (the lock table measures that).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import check_float, option
from ..tasks import Task
from ..train import LoopConfig
from . import augment as _augment
from .base import Certificate, Locked, TaskLock, register_lock
from .fresh_distill import SKETCH, _sketch, _weights, check_distill, distill, distill_tasks, fresh_student

PROFILES = ("uniform", "depth")
MIN_GAP = 1e-3  # a start within this cosine of the base's weight was not moved by the noise: not certified


@dataclass
class UndoConfig:
    loop: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="adam", lr=1e-3, epochs=3),
        help="the distillation loop over the authorized task's training split",
    )
    noise: float = option(
        0.5,
        "the dial in [0, 1]: the student starts at (1 - noise) * base + noise * the architecture's own "
        "re-initialization; 0: the base itself, 1: fresh-distill's start",
    )
    temperature: float = option(2.0, "distillation temperature T")
    ce_weight: float = option(0.5, "weight of the hard-label cross-entropy beside the distillation term")
    keep: tuple[str, ...] = option(
        (),
        "regular expressions over parameter names copied from the base unchanged, not noised "
        "(default: none, every re-initializable weight noised)",
    )
    seed: int | None = option(
        None,
        "seed of the noise (the re-initialization); a secret, since with it the noise can be subtracted: "
        "private (left out of a public release), and when unset drawn at random and written only to the "
        "owner's run report. A seed such as 0 can reproduce the base's own initialization",
        private=True,
    )
    max_closed: float = option(
        0.75,
        "the claim: for every noised weight, the distillation closed at most this fraction of the noised "
        "start's cosine gap to the base: |cos(W, W_base)| <= c0 + max_closed * (1 - c0), c0 = cos(W_start, "
        "W_base) (count sketches); the base's own weights close all of it",
    )
    data: str | None = option(
        None,
        "the task whose training split is distilled (default: the retain task as handed over); its "
        "classes must be the retain task's",
    )
    augment: str = option("none", _augment.HELP, choices=lambda: _augment.KINDS)
    profile: str = option(
        "uniform",
        "where the noise goes: uniform, every weight at `noise` (the paper); depth (ours), a linear ramp over the "
        "noised tensors in the model's order, from the input (least) to the output (most), whose mean is `noise`",
        choices=lambda: PROFILES,
    )

    def __post_init__(self):
        check_distill("undo", self)
        check_float("undo", "noise", self.noise, 0.0, 1.0)
        if self.profile not in PROFILES:
            raise ValueError(f"undo: profile must be one of {PROFILES}, got {self.profile!r}")
        check_float("undo", "max_closed", self.max_closed, 0.0, 1.0)


@dataclass
class UndoRecord:
    retain_task: str | None = option(None, "the authorized task")
    sketch_seed: int | None = option(None, "seed of the certificate's count sketches (not the noise seed)")
    sketches: dict | None = option(None, "{weight name: the base weight's random sketch}")
    start: dict | None = option(None, "{weight name: the noised start's cosine to the base weight, by the sketch}")


def ramp(noise: float, n: int) -> list[float]:
    """The depth profile's noise for n tensors in order: a linear ramp in [0, 1] whose mean is `noise`, from
    2 noise t to the output for noise <= 1/2 (t in (0, 1), the tensor's mid-point position), else from
    1 - 2 (1 - noise) (1 - t); noise 0 and 1 give all 0 and all 1."""
    ts = [(i + 0.5) / n for i in range(n)]
    if noise <= 0.5:
        return [2 * noise * t for t in ts]
    return [1 - 2 * (1 - noise) * (1 - t) for t in ts]


def noised(
    model: nn.Module,
    noise: float,
    seed: int,
    keep: tuple[str, ...] = (),
    owner: str = "undo",
    profile: str = "uniform",
) -> tuple[nn.Module, list[str]]:
    """UNDO's start: a copy of `model` whose floating-point parameters and buffers are (1 - w) * base + w * fresh,
    fresh = `fresh_student(model, seed, keep)` (what fresh-distill starts from), w = `noise` for every tensor
    (profile "uniform") or `ramp(noise, n)` over the n mixed tensors in state-dict order (profile "depth"); kept
    parameters stay the base's (frozen, as fresh-distill's), other entries (integer counters) are the base's
    unless w == 1. noise=0 gives the base's values exactly, noise=1 fresh-distill's start exactly.
    Returns (student, kept names)."""
    check_float(owner, "noise", noise, 0.0, 1.0)
    if profile not in PROFILES:
        raise ValueError(f"{owner}: profile must be one of {PROFILES}, got {profile!r}")
    student, kept = fresh_student(model, seed, keep, owner)
    base = model.state_dict()
    seen: set[int] = set()
    mixed = []
    for name, t in student.state_dict(keep_vars=True).items():
        if name in kept or id(t) in seen:  # kept: the base's already; a tied tensor: mixed once
            continue
        seen.add(id(t))
        mixed.append((name, t))
    weights = [noise] * len(mixed) if profile == "uniform" else ramp(noise, len(mixed))
    with torch.no_grad():
        for (name, t), w in zip(mixed, weights, strict=True):
            b = base[name].to(t.device)
            if t.is_floating_point():
                t.copy_((1 - w) * b + w * t)
            elif w < 1:
                t.copy_(b)
    return student, kept


def _cosines(model: nn.Module, sketches: dict, seed: int) -> dict[str, float]:
    """{weight name: |cos(W, W_base)|} estimated from the recorded base sketches."""
    now = _weights(model, ())
    missing = sorted(set(sketches) - set(now))
    if missing:
        raise ValueError(f"undo: the model lacks recorded weights {missing[:3]}")
    return {n: float((_sketch(now[n], seed) * torch.tensor(s)).sum().abs()) for n, s in sketches.items()}


@register_lock(
    "undo",
    UndoConfig,
    example={
        "noise": 0.5,
        "seed": 1,
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
    },
)
class UndoLock(TaskLock):
    """UNDO: distill the base's authorized-task behaviour into a partly noised copy of the base."""

    record_cls = UndoRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        cfg = self.cfg
        retain, data = distill_tasks(self, model, retain)
        seed = secrets.randbits(31) if cfg.seed is None else cfg.seed
        student, kept = noised(model, cfg.noise, seed, cfg.keep, self.name, cfg.profile)
        sketch_seed = secrets.randbits(31)  # independent of the noise seed, which stays out of the record
        base = _weights(model, cfg.keep)
        sketches = {n: _sketch(w, sketch_seed) for n, w in base.items()}
        start = dict(student.named_parameters())
        start_cos = {n: round(float((_sketch(start[n], sketch_seed) * s).sum().abs()), 6) for n, s in sketches.items()}
        report = distill(self, model, student, (retain, data), seed, kept, progress, checkpoint)
        report.config["seed"] = seed  # the owner's copy only (the run report); the public record never has it
        record = UndoRecord(
            retain.name,
            sketch_seed,
            {n: [round(v, 6) for v in s.tolist()] for n, s in sketches.items()},
            start_cos,
        )
        return Locked(student, record, report)

    def certify(self, model: nn.Module, record: UndoRecord) -> list[Certificate]:
        if not record.sketches or record.start is None or record.sketch_seed is None:
            raise ValueError("undo: no sketches recorded; apply the lock first")
        cos = _cosines(model, record.sketches, record.sketch_seed)
        moved = {n: c0 for n, c0 in record.start.items() if n in cos and 1.0 - c0 >= MIN_GAP}
        closed = {n: (cos[n] - c0) / (1.0 - c0) for n, c0 in moved.items()}
        worst = max(closed.values(), default=0.0)
        noise = self.cfg.noise
        return [
            Certificate(
                lock=self.name,
                invariant=(
                    f"max over noised weights of the fraction of the start's cosine gap to the base closed, "
                    f"(|cos(W, W_base)| - c0) / (1 - c0) ({SKETCH}-bucket count sketches; noise {noise:g})"
                ),
                measured=worst,
                required=self.cfg.max_closed,
                relation="<=",
                proof_of_gap=(
                    "none proven: the weights started a fraction `noise` of the way from the base to a fresh "
                    "initialization and were trained only to reproduce the base on the authorized task's "
                    "inputs; the check shows they did not walk back to the base, not that the base's knowledge "
                    "beyond those inputs is gone (it survives in proportion to the start's cosine c0); the lock "
                    "table measures the attacker's uplift over the best reference attacker"
                ),
                preservation="none needed: a release-time property of these weights",
                threat_model="release-time",
                adversary_can_remove=noise < 1,
                removal=(
                    "nothing to remove at noise 1 (a fresh network). Below 1 the weights are (1 - noise) * base "
                    "+ noise * fresh + Delta (the distillation's update): whoever finds the noise seed subtracts "
                    "the noise and gets base + Delta / (1 - noise). The seed is kept out of the record, but torch "
                    "keeps only 32 bits of it, so a search over seeds for the initialization that correlates with "
                    "these weights finds it; the base's large singular directions also stand out of the noise "
                    "at (1 - noise) scale. An attacker can always fine-tune or distill this model"
                ),
                method=(
                    f"seeded count sketches of each flattened weight in {SKETCH} buckets (sketch seed recorded, "
                    f"independent of the noise seed): the base's sketch and the noised start's cosine to it "
                    f"recorded at lock time, the released weight's cosine measured now"
                ),
                details={
                    "closed": closed,
                    "cosine": cos,
                    "start": dict(record.start),
                    "not_moved": sorted(set(cos) - set(moved)),  # not certified: the noise left them the base's
                    "kept": list(self.cfg.keep),
                    "noise": noise,
                    "base_passes": not moved or self.cfg.max_closed >= 1.0,  # the base closes every gap
                },
            )
        ]
