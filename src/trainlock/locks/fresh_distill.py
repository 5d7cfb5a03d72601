"""`fresh-distill` (our design): release a model that was never the pretrained one.

Every failure measured so far has one cause: the released weights *are* the base's weights, deformed. An
attacker undoes the deformation (spectral clipping, temperature reset, folding) or ignores it (Adam's
per-coordinate steps, distillation), and the pretrained knowledge is still there to fine-tune. This lock
keeps nothing to undo: the architecture is re-initialized (every module's own `reset_parameters`, a seed)
and trained only to reproduce the base's behaviour on the authorized task's inputs,

    loss = T^2 KL(softmax(base(x) / T) || softmax(student(x) / T)) + ce_weight * CE(student(x), y),  x ~ retain

so the released weights hold what the authorized inputs elicit from the base and, by construction, none of
the base's other knowledge that those inputs do not reach. `keep` (regular expressions over parameter names)
copies some base parameters unchanged instead, e.g. the embeddings, for the utility-for-protection trade-off.
`data` names the task whose training split is distilled when it should be more than the retain task handed to
`apply` (a table or a study may hand over a small subset; the authorized task's whole split buys utility back).
`augment` shows teacher and student the same augmented views of those inputs (`trainlock.locks.augment`).
The start, the distillation loop and the certificate's sketch are shared with `undo` (`trainlock.locks.undo`),
which starts from a partly noised copy of the base instead of a fresh one.

The cost is utility: a fresh network trained on the authorized data alone is what the base's pretraining was
for. The claim is empirical (the lock table measures the attacker's uplift over the best reference); the
certificate checks only that the released weights are not the base's: every re-initialized weight's cosine
similarity to the base's weight, estimated from a 256-bucket count sketch recorded at lock time
(Johnson-Lindenstrauss), stays below `max_cosine`. An attacker holding the base does not need this model; one
without it gets no more than the authorized task's behaviour, which a distillation attack on the released model
also gets.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, option
from ..tasks import Task, for_model
from ..train import LoopConfig, LoopHooks, clone_model, fit, recalibrate_batchnorm, reinitialized
from . import augment as _augment
from .base import Certificate, Locked, LockReport, TaskLock, register_lock, trained

SKETCH = 256  # count-sketch buckets per weight: unrelated weights read |cos| ~ 1/16


@dataclass
class FreshDistillConfig:
    loop: LoopConfig = option(
        factory=lambda: LoopConfig(optimizer="adam", lr=1e-3, epochs=3),
        help="the distillation loop over the authorized task's training split",
    )
    temperature: float = option(2.0, "distillation temperature T")
    ce_weight: float = option(0.5, "weight of the hard-label cross-entropy beside the distillation term")
    keep: tuple[str, ...] = option(
        (),
        "regular expressions over parameter names copied from the base unchanged "
        "(default: none, every weight re-initialized)",
    )
    seed: int | None = option(
        None,
        "seed of the re-initialization and of the certificate's sketch (default: drawn "
        "at random and recorded: a fixed seed such as 0 can reproduce the base's own "
        "initialization, when the base was built under it)",
    )
    max_cosine: float = option(
        0.3, "the claim: |cos(released weight, base weight)| below this for every re-initialized weight"
    )
    data: str | None = option(
        None,
        "the task whose training split is distilled (default: the retain task as "
        "handed over); e.g. the retain task's own name, to distill on all of it when a "
        "subset is handed over. Its classes must be the retain task's",
    )
    augment: str = option("none", _augment.HELP, choices=lambda: _augment.KINDS)

    def __post_init__(self):
        check_distill("fresh-distill", self)
        check_float("fresh-distill", "max_cosine", self.max_cosine, 0.0, 1.0)


def check_distill(owner: str, cfg) -> None:
    """Check the settings every distillation lock shares (temperature, ce_weight, keep, augment); `keep`
    becomes a tuple."""
    check_float(owner, "temperature", cfg.temperature, 0.0, open_low=True)
    check_float(owner, "ce_weight", cfg.ce_weight, 0.0)
    _augment.check_kind(owner, cfg.augment)
    cfg.keep = (cfg.keep,) if isinstance(cfg.keep, str) else tuple(cfg.keep)
    for pat in cfg.keep:
        try:
            re.compile(pat)
        except re.error as e:
            raise ValueError(f"{owner}: keep pattern {pat!r} is not a regular expression ({e})") from None


def _sketch(w: torch.Tensor, seed: int) -> torch.Tensor:
    """A unit-norm count sketch of vec(w) in SKETCH buckets (a seeded bucket and sign per coordinate, the same
    for the same size and seed): the inner product of two sketches estimates the cosine of the two weights."""
    v = w.detach().float().reshape(-1).cpu()
    g = torch.Generator().manual_seed(seed)
    bucket = torch.randint(0, SKETCH, (v.numel(),), generator=g)
    sign = torch.randint(0, 2, (v.numel(),), generator=g).float() * 2 - 1
    s = torch.zeros(SKETCH).index_add_(0, bucket, sign * v)
    return s / s.norm().clamp_min(1e-12)


def _weights(model: nn.Module, keep: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The matrices (2-D and up) that were re-initialized, by name."""
    return {n: p for n, p in model.named_parameters() if p.dim() >= 2 and not any(re.search(k, n) for k in keep)}


def fresh_student(model: nn.Module, seed: int, keep: tuple[str, ...], owner: str) -> tuple[nn.Module, list[str]]:
    """The distillation's fresh start: `reinitialized(model, seed)` (each module's own `reset_parameters`; a
    parameter no module resets, such as a transformer's position table, stays the base's), with the parameters
    that `keep` matches copied from the base and frozen for the distillation. Returns (student, kept names)."""
    student = reinitialized(model, seed)
    base = dict(model.named_parameters())
    unmatched = [k for k in keep if not any(re.search(k, n) for n in base)]
    if unmatched:
        raise ValueError(f"{owner}: keep pattern(s) {unmatched} match no parameter")
    kept = []
    with torch.no_grad():
        for n, p in student.named_parameters():
            if any(re.search(k, n) for k in keep):
                p.copy_(base[n])
                p.requires_grad_(False)  # unchanged by the distillation (the loop steps only what needs grad)
                kept.append(n)
    return student, kept


def distill_tasks(lock: TaskLock, model: nn.Module, retain: Task | None) -> tuple[Task, Task]:
    """(the retain task, the task whose training inputs are distilled: the config's `data`, else the retain
    task), both fitted to `model`; checks that they speak the same classes and that `augment` suits them."""
    if retain is None:
        raise ValueError(f"{lock.name}: apply needs the retain (authorized) task: its inputs are what is distilled")
    retain = for_model(retain, model)
    cfg = lock.cfg
    data = retain if cfg.data is None else for_model(lock.task(cfg.data), model)
    if data.num_classes != retain.num_classes:
        raise ValueError(
            f"{lock.name}: data task {cfg.data!r} has {data.num_classes} classes, the retain task "
            f"{retain.name!r} has {retain.num_classes}"
        )
    if cfg.augment != "none":
        _augment.check_inputs(lock.name, cfg.augment, data.x_train[:1])  # before any training
    return retain, data


def distill(
    lock: TaskLock,
    model: nn.Module,
    student: nn.Module,
    tasks: tuple[Task, Task],
    seed: int,
    kept: Sequence[str] = (),
    progress: bool = False,
    checkpoint=None,
) -> LockReport:
    """Train `student` (in place) to reproduce `model` on `data`'s training inputs (`tasks` = (retain, data), as
    `distill_tasks` gives them), under the lock's `cfg.loop`:

        T^2 KL(softmax(model(x) / T) || softmax(student(x) / T)) + ce_weight * CE(student(x), y)

    with x the `cfg.augment` view of the batch (the same view for teacher and student; a mixed-up row, which has
    no label, gets the KL term only). `kept` parameters are frozen during the run and released as ordinary
    ones. The augmentation draws from torch's global CPU generator, seeded with `seed` here (a loop checkpoint
    saves and restores it). After the loop every BatchNorm's running statistics are recomputed on `data`'s
    clean (unaugmented) training inputs (`trainlock.train.recalibrate_batchnorm`): the start's statistics are
    the base's, a fresh network's or a mixture, and a small BatchNorm momentum does not forget them in a short
    run (EfficientNet-Lite0 scored chance in eval mode before this). Returns the run report (`trained`:
    accuracy on `retain` before and after)."""
    owner, cfg, (retain, data) = lock.name, lock.cfg, tasks
    teacher = clone_model(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    aug = _augment.Augmenter.for_model(cfg.augment, model, owner)
    t = cfg.temperature
    sums = {"ce": 0.0, "n": 0}

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x, plain = aug(x)
        logits = m(x)
        with torch.no_grad():
            ref = F.log_softmax(teacher(x) / t, dim=1)
        kl = F.kl_div(F.log_softmax(logits / t, dim=1), ref, log_target=True, reduction="batchmean") * t * t
        if plain is None:
            ce = F.cross_entropy(logits, y)
        elif bool(plain.any()):
            ce = F.cross_entropy(logits[plain], y[plain])
        else:
            ce = logits.sum() * 0.0  # every row mixed: no label to score
        sums["ce"] += float(ce.detach())
        sums["n"] += 1
        return kl + cfg.ce_weight * ce, {}

    def on_epoch(epoch: int) -> dict:  # the retain loss per epoch, as the conservation certificate reads it
        log = {"retain_loss": sums["ce"] / max(1, sums["n"])}
        sums.update(ce=0.0, n=0)
        return log

    teacher.to(next(student.parameters()).device)

    def run():
        if cfg.augment != "none":
            torch.manual_seed(seed)
        res = fit(
            student,
            data,
            cfg.loop,
            loss_fn,
            LoopHooks(on_epoch=on_epoch, checkpoint=checkpoint),
            desc=owner,
            progress=progress,
        )
        for n, p in student.named_parameters():
            if n in kept:
                p.requires_grad_(True)  # released as an ordinary model
        recalibrate_batchnorm(student, data.x_train, max(2, cfg.loop.batch_size))
        return res

    return trained(model, student, retain, cfg, run)


@dataclass
class FreshDistillRecord:
    retain_task: str | None = option(None, "the authorized task")
    seed: int | None = option(None, "the seed used (the config's, else drawn at random)")
    sketches: dict | None = option(None, "{weight name: the base weight's random sketch}")


@register_lock(
    "fresh-distill",
    FreshDistillConfig,
    example={
        "seed": 1,
        "keep": ["^pos$"],
        "loop": {"optimizer": "adam", "lr": 1e-3, "max_steps": 20, "batch_size": 32, "device": "cpu"},
    },
)
class FreshDistillLock(TaskLock):
    """Re-initialize the architecture and distill the base's authorized-task behaviour into it."""

    record_cls = FreshDistillRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        cfg = self.cfg
        retain, data = distill_tasks(self, model, retain)
        seed = secrets.randbits(31) if cfg.seed is None else cfg.seed
        student, kept = fresh_student(model, seed, cfg.keep, self.name)
        report = distill(self, model, student, (retain, data), seed, kept, progress, checkpoint)
        sketches = {n: [round(v, 6) for v in _sketch(w, seed).tolist()] for n, w in _weights(model, cfg.keep).items()}
        return Locked(student, FreshDistillRecord(retain.name, seed, sketches), report)

    def certify(self, model: nn.Module, record: FreshDistillRecord) -> list[Certificate]:
        if not record.sketches:
            raise ValueError("fresh-distill: no sketches recorded; apply the lock first")
        now = _weights(model, self.cfg.keep)
        missing = sorted(set(record.sketches) - set(now))
        seed = record.seed if record.seed is not None else self.cfg.seed
        if missing:
            raise ValueError(f"fresh-distill: the model lacks recorded weights {missing[:3]}")
        cos = {n: float((_sketch(now[n], seed) * torch.tensor(s)).sum().abs()) for n, s in record.sketches.items()}
        worst = max(cos.values())
        return [
            Certificate(
                lock=self.name,
                invariant=f"max over re-initialized weights of |cos(W, W_base)| ({SKETCH}-bucket count sketches)",
                measured=worst,
                required=self.cfg.max_cosine,
                relation="<=",
                proof_of_gap=(
                    "none proven: the released weights were trained from a fresh initialization on the "
                    "authorized task's inputs only, so the base's knowledge those inputs do not reach is not "
                    "in them; the lock table measures the attacker's uplift over the best reference attacker"
                ),
                preservation="none needed: nothing is deformed, so nothing can be undone to recover the base",
                threat_model="release-time",
                adversary_can_remove=False,
                removal=(
                    "there is no deformation to remove; an attacker can still distill or fine-tune this model, and "
                    "gets the authorized task's behaviour (what the release is for) as a head start"
                ),
                method=(
                    f"a seeded count sketch of each flattened weight in {SKETCH} buckets, recorded for the base at "
                    f"lock time; the absolute inner product of the unit sketches (about {1 / SKETCH**0.5:.2f} for "
                    f"unrelated weights, 1 for the base's own)"
                ),
                details={"cosine": cos, "kept": list(self.cfg.keep)},
            )
        ]
