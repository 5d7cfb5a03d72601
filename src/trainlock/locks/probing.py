"""What the locks that train against a linear probe share (`mlac`, `probe-adversary`): the proxy restricted
domains they train against, differentiable feature taps on the blocks the probe attack reads, a closed-form
ridge-regression probe fitted on a batch, the retain loss (cross-entropy plus KL to the base), and the probe
certificate.

The feature sets are those of the probe attack (`trainlock.models.blocks.feature_modules`: the head's input
and up to `max_blocks` trunk blocks, pooled to one vector per example), read in eval mode as the attacker
reads them. The batch probe standardizes each feature on the half it is fitted on (the attacker's
standardized logistic regression is invariant to a feature's scale, so a lock must not win by shrinking
features), centres the one-hot targets (an unpenalized intercept) and solves

    W = (F^T F + lam n I)^-1 F^T Y          (n: examples fitted on; the dual form when F is wide)

then scores the other half; both halves take each role once, and with several penalties `lam` the best
2-fold score counts (as the attacker's cross-validation picks its C). The adversarial term is the positive part
of the held-out R^2 of that probe: zero exactly when it does no better than predicting the class frequencies.
It is bounded, and it asks for an uninformative probe, not a wrong one (a consistently wrong probe is
information a logistic regression on the full data would use).

The probe certificate: a fixed standardized ridge probe fitted from the weights on the proxy task's training
split (its first `samples` examples), scored on its test split, ends at or below a recorded accuracy on every
feature set. It is not the attacker's cross-validated logistic regression on the full data, not a probe on
another layer, another pooling or another task (the held-back tasks the red team scores are never used), and
it says nothing about fine-tuning: the red team measures those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_float, check_int, option
from ..models.blocks import MAX_BLOCKS, feature_modules, is_tokens, pool
from ..registry import UnknownNameError
from ..tasks import Task, for_model
from ..train import clone_model
from .base import Certificate
from .restricted import RestrictedLock, RestrictedRecord

REDUCTIONS = ("mean", "max")


@dataclass
class ProbeCheck:
    """The fixed probe the certificate fits from the weights on the proxy (restricted) task."""

    lam: float = option(0.01, "ridge penalty per training example, on standardized features")
    samples: int = option(2000, "training examples it is fitted on (the first ones of the training split)")
    test_samples: int = option(1000, "test examples it is scored on (the first ones of the test split)")
    slack: float = option(0.02, "the default claim is the accuracy measured when the lock was applied plus this")
    max_accuracy: float | None = option(
        None,
        "the claim: the probe's accuracy on every feature set <= this (default, set by apply: its accuracy on "
        "the locked weights + slack)",
    )

    def __post_init__(self):
        check_float("probe", "lam", self.lam, 0.0, open_low=True)
        check_int("probe", "samples", self.samples, 4)
        check_int("probe", "test_samples", self.test_samples, 1)
        check_float("probe", "slack", self.slack, 0.0, 1.0)
        check_float("probe", "max_accuracy", self.max_accuracy, 0.0, 1.0, allow_none=True)


@dataclass
class ProbeRecord(RestrictedRecord):
    """What a probe-targeting lock's apply measured: the simulated attack's claim (mlac; None without one) and
    the probe certificate's."""

    probe_at_lock: float | None = option(None, "the certificate probe's best accuracy on the locked weights")
    probe_max_accuracy: float | None = option(None, "the probe claim: its accuracy ends at or below this")


def check_probe_settings(owner: str, cfg) -> None:
    """ValueError naming the field for the settings both probe-targeting locks share."""
    check_float(owner, "alpha", cfg.alpha, 0.0, 1.0)
    cfg.lam = (cfg.lam,) if isinstance(cfg.lam, (int, float)) else tuple(cfg.lam)
    if not cfg.lam:
        raise ValueError(f"{owner}: lam must name at least one ridge penalty")
    for lam in cfg.lam:
        check_float(owner, "lam", lam, 0.0, open_low=True)
    check_float(owner, "kl_weight", cfg.kl_weight, 0.0)
    check_int(owner, "probe_batch", cfg.probe_batch, 4)
    check_int(owner, "max_blocks", cfg.max_blocks, 1)
    if cfg.layers not in ("all", "head"):
        raise ValueError(f"{owner}: layers must be one of ('all', 'head'), got {cfg.layers!r}")
    if cfg.reduce not in REDUCTIONS:
        raise ValueError(f"{owner}: reduce must be one of {REDUCTIONS}, got {cfg.reduce!r}")
    cfg.proxies = (cfg.proxies,) if isinstance(cfg.proxies, str) else tuple(cfg.proxies)
    bad = [p for p in cfg.proxies if not isinstance(p, str) or not p]
    if bad:
        raise ValueError(f"{owner}: proxies must be task names, got {bad!r}")


# ---------------------------------------------------------------- features


class FeatureTap:
    """Forward hooks on the probe attack's feature sets of `model` that keep each set's pooled output, with its
    graph, while `read` runs (and nothing otherwise: the retain forward and the simulated fine-tuning pass
    through untouched). `close()` removes the hooks."""

    def __init__(self, model: nn.Module, layers: str = "all", max_blocks: int | None = MAX_BLOCKS):
        self.sets = feature_modules(model, layers, max_blocks)
        self._on, self._got, self._mask, self._n = False, {}, None, 0
        self._handles = [
            mod.register_forward_pre_hook(self._hook(name, True))
            if i == 0
            else mod.register_forward_hook(self._hook(name, False))
            for i, (name, mod) in enumerate(self.sets)
        ]

    def _hook(self, name: str, pre: bool):
        def fn(_module, args, out=None):
            if self._on:
                v = pool(args[0] if pre and args else out, self._mask, self._n)
                if v is not None:
                    self._got[name] = v  # a module called more than once per forward: its last call counts

        return fn

    def read(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(model(x), {feature set: (N, D) pooled float features}); a set that gave no tensor is left out."""
        self._got, self._n, self._mask = {}, len(x), (x[:, 1] if is_tokens(x) else None)
        self._on = True
        try:
            out = model(x)
        finally:
            self._on = False
        got, self._got = self._got, {}
        return out, got

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ---------------------------------------------------------------- the closed-form probe


def ridge_solve(f: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """(F^T F + lam I)^-1 F^T Y for F (n, d), Y (n, k), lam > 0: (d, k), differentiable in F. When d > n the
    dual form F^T (F F^T + lam I)^-1 Y gives the same solution from an n x n system."""
    n, d = f.shape
    if d <= n:
        eye = torch.eye(d, dtype=f.dtype, device=f.device)
        return torch.linalg.solve(f.T @ f + lam * eye, f.T @ y)
    eye = torch.eye(n, dtype=f.dtype, device=f.device)
    return f.T @ torch.linalg.solve(f @ f.T + lam * eye, y)


def ridge_probe(
    fit: tuple[torch.Tensor, torch.Tensor], held: tuple[torch.Tensor, torch.Tensor], num_classes: int, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out R^2, held-out accuracy) of the standardized ridge probe fitted on `fit` = (features, labels)
    and scored on `held` (see the module docstring); float64, differentiable in both feature matrices."""
    with torch.autocast(device_type=fit[0].device.type, enabled=False):
        f_fit, f_out = fit[0].double(), held[0].double()
        mu, var = f_fit.mean(0), f_fit.var(0, unbiased=False)
        # per feature and scale-free: only a spread below float32's resolution of its mean counts as constant
        sd = (var + 1e-14 * mu.pow(2) + 1e-30).sqrt()
        a, b = (f_fit - mu) / sd, (f_out - mu) / sd
        t_fit = F.one_hot(fit[1], num_classes).double()
        t_out = F.one_hot(held[1], num_classes).double()
        prior = t_fit.mean(0)
        w = ridge_solve(a, t_fit - prior, lam * len(a))
        pred = b @ w + prior
        mse = (t_out - pred).pow(2).sum(1).mean()
        const = (t_out - prior).pow(2).sum(1).mean().clamp_min(1e-12)
        acc = (pred.argmax(1) == held[1]).double().mean()
    return 1.0 - mse / const, acc


def probe_term(
    feats: dict[str, torch.Tensor], y: torch.Tensor, num_classes: int, lam: float | tuple, reduce: str = "mean"
) -> tuple[torch.Tensor, dict]:
    """The adversarial term: over the feature sets (`reduce`: their mean or max) of the positive part of the
    batch probe's held-out R^2, each half of the batch fitted on once and scored by the other (2-fold), with the
    penalty of `lam` (one, or several: the best 2-fold score counts, as the attacker's cross-validation picks
    its C). Also returns the largest R^2 and accuracy over the sets (floats, for the log). Zero (no gradient)
    with < 4 examples."""
    h = len(y) // 2
    if h < 2 or not feats:
        return torch.zeros((), device=y.device), {"probe_r2": 0.0, "probe_accuracy": 0.0}
    lams = (lam,) if isinstance(lam, (int, float)) else tuple(lam)
    terms, r2s, accs = [], [], []
    for f in feats.values():
        one, two = (f[:h], y[:h]), (f[h : 2 * h], y[h : 2 * h])
        scores = []
        for penalty in lams:
            r_a, acc_a = ridge_probe(one, two, num_classes, penalty)
            r_b, acc_b = ridge_probe(two, one, num_classes, penalty)
            scores.append(((r_a + r_b) / 2, (acc_a + acc_b) / 2))
        r2, acc = max(scores, key=lambda s: float(s[0].detach()))
        terms.append(F.relu(r2))
        r2s.append(float(r2.detach()))
        accs.append(float(acc))
    stacked = torch.stack(terms)
    loss = stacked.max() if reduce == "max" else stacked.mean()
    return loss.float(), {"probe_r2": max(r2s), "probe_accuracy": max(accs)}


@torch.no_grad()
def probe_scores(
    model: nn.Module, task: Task, check: ProbeCheck, layers: str = "all", max_blocks: int | None = MAX_BLOCKS
) -> dict[str, float]:
    """{feature set: test accuracy} of the certificate's probe (`check`) on `model`'s features of `task`
    (fitted on the first `check.samples` training examples, scored on the first `check.test_samples` test
    examples), in eval mode, the model's mode restored."""
    task = for_model(task, model)
    tap = FeatureTap(model, layers, max_blocks)
    was = model.training
    model.eval()
    device = next(model.parameters()).device

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {}
        for i in range(0, len(x), 256):
            _, got = tap.read(model, x[i : i + 256].to(device))
            for name, v in got.items():
                parts.setdefault(name, []).append(v.cpu())
        return {name: torch.cat(v) for name, v in parts.items() if sum(len(p) for p in v) == len(x)}

    try:
        tr = features(task.x_train[: check.samples])
        te = features(task.x_test[: check.test_samples])
    finally:
        tap.close()
        model.train(was)
    y_tr, y_te = task.y_train[: check.samples], task.y_test[: check.test_samples]
    return {
        name: float(ridge_probe((tr[name], y_tr), (te[name], y_te), task.num_classes, check.lam)[1])
        for name in tr
        if name in te
    }


# ---------------------------------------------------------------- training pieces


def retain_loss(model: nn.Module, base: nn.Module, x: torch.Tensor, y: torch.Tensor, kl_weight: float):
    """(CE(model(x), y) + kl_weight * KL(base || model), the cross-entropy alone): the authorized task kept,
    and kept close to what the base predicted on it."""
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    if kl_weight == 0:
        return ce, ce
    with torch.no_grad():
        target = F.log_softmax(base(x).float(), dim=1)
    kl = F.kl_div(F.log_softmax(logits.float(), dim=1), target, log_target=True, reduction="batchmean")
    return ce + kl_weight * kl, ce


def on_device(stream: Iterator, device: torch.device) -> Iterator:
    """The batches of `stream`, moved to `device`."""
    return ((x.to(device), y.to(device)) for x, y in stream)


class ProbeTargetLock(RestrictedLock):
    """A restricted-domain lock that trains against a probe on proxy tasks: the config's `restricted` task (the
    certified proxy) and its `proxies` (more proxies, trained against, not certified), never any other task.
    Adds the probe certificate to the simulated attack's (when the config has an `attack`)."""

    record_cls = ProbeRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None):
        if retain is not None and retain.name in self.cfg.proxies:
            raise ValueError(f"{self.name}: proxies: {retain.name!r} is the retain (authorized) task")
        return super().apply(model, retain, progress=progress, checkpoint=checkpoint)

    def restricted_task(self) -> Task:
        if not self.cfg.restricted:
            raise ValueError(f"{self.name}: 'restricted' must name the proxy task the lock trains against")
        return self._named("restricted", self.cfg.restricted)

    def _named(self, field_name: str, name: str) -> Task:
        try:
            return self.task(name)
        except UnknownNameError as e:
            raise ValueError(f"{self.name}: {field_name}: unknown task {name!r} ({e})") from None

    def proxy_tasks(self, model: nn.Module, restricted: Task) -> list[Task]:
        """The restricted task and every task in `proxies`, as `model` reads them (duplicates dropped)."""
        out = [restricted]
        for name in self.cfg.proxies:
            if name not in {t.name for t in out}:
                out.append(for_model(self._named("proxies", name), model))
        return out

    def base_copy(self, locked: nn.Module) -> nn.Module:
        """A frozen copy of the weights before the lock (the retain KL's target), in eval mode."""
        base = clone_model(locked).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        return base

    def probe_loss(self, m: nn.Module, tap: FeatureTap, batch, task: Task) -> tuple[torch.Tensor, dict]:
        """The adversarial probe term on one proxy batch, its features read in eval mode (as the attacker reads
        them: BatchNorm running statistics, no dropout, and no statistics moved by the proxy batch)."""
        xr, yr = batch
        was = m.training
        m.eval()
        try:
            _, feats = tap.read(m, xr)
        finally:
            m.train(was)
        return probe_term(feats, yr, task.num_classes, self.cfg.lam, self.cfg.reduce)

    def after_apply(self, locked: nn.Module, restricted: Task) -> dict:
        best = max(probe_scores(locked, restricted, self.cfg.probe, self.cfg.layers, self.cfg.max_blocks).values())
        claim = self.cfg.probe.max_accuracy
        claim = min(1.0, best + self.cfg.probe.slack) if claim is None else claim
        return {"probe_at_lock": best, "probe_max_accuracy": claim}

    def certify(self, model: nn.Module, record: ProbeRecord) -> list[Certificate]:
        certs = super().certify(model, record) if getattr(self.cfg, "attack", None) is not None else []
        return [*certs, self.probe_certificate(model, record)]

    def probe_certificate(self, model: nn.Module, record: ProbeRecord) -> Certificate:
        claim = record.probe_max_accuracy if record.probe_max_accuracy is not None else self.cfg.probe.max_accuracy
        if claim is None:
            raise ValueError(f"{self.name}: no probe claim recorded; apply the lock first")
        task = self.restricted_task()
        check = self.cfg.probe
        scores = probe_scores(model, task, check, self.cfg.layers, self.cfg.max_blocks)
        best = max(scores, key=scores.get)
        return Certificate(
            lock=self.name,
            invariant=(
                f"best accuracy over the feature sets (layers={self.cfg.layers}, at most {self.cfg.max_blocks} "
                f"trunk blocks) of a standardized ridge probe (lam {check.lam:g} per example) fitted on the first "
                f"{check.samples} training examples of {task.name!r} and scored on its first {check.test_samples} "
                "test examples"
            ),
            measured=scores[best],
            required=float(claim),
            relation="<=",
            proof_of_gap=(
                "the weights were trained so that batch ridge probes on the proxy domain's features do no better "
                "than the class frequencies; this one fixed probe ends at or below the recorded accuracy"
            ),
            preservation=(
                "none: the certificate re-fits one fixed probe; a cross-validated logistic regression on the full "
                "data, another layer or pooling, a nonlinear probe, fine-tuning, or another (held-back) task may "
                "all do better; the red team measures those"
            ),
            threat_model="release-time",
            adversary_can_remove=True,
            removal=(
                "an adversary with the weights fits a stronger probe (more data, tuned regularization, other "
                "layers), fine-tunes, or trains from scratch"
            ),
            method="trainlock.locks.probing.probe_scores (closed-form ridge on eval-mode pooled features)",
            details={
                "restricted": self.cfg.restricted,
                "retain_task": record.retain_task,
                "by_feature_set": scores,
                "best_feature_set": best,
                "probe_at_lock": record.probe_at_lock,
                "probe": dataclasses.asdict(check),
                **self.details(model, record),
            },
        )


__all__ = [
    "REDUCTIONS",
    "FeatureTap",
    "ProbeCheck",
    "ProbeRecord",
    "ProbeTargetLock",
    "check_probe_settings",
    "on_device",
    "probe_scores",
    "probe_term",
    "retain_loss",
    "ridge_probe",
    "ridge_solve",
]
