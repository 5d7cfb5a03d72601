"""Compactification report: the regularization path with its sublevel-set radius bound, and test
accuracy after pruning and quantization. The weight-space operations themselves live in
`trainlock.locks.compress` (the sparsity lock and the attack transforms use them too).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..locks.compress import lockable_weights, magnitude_prune, quantize, sublevel_radius
from ..tasks import for_model


def _sq_norm(model: nn.Module) -> float:
    """||theta||^2 over every trainable parameter (weights and biases): the penalized vector."""
    return float(sum(p.detach().double().pow(2).sum() for p in model.parameters() if p.requires_grad))


@torch.no_grad()
def _train_loss(model: nn.Module, task) -> float:
    """Mean cross-entropy over the whole training split, in eval mode (L in the objective)."""
    from ..train import predict

    logits = predict(model, task.x_train)
    return float(F.cross_entropy(logits.double(), task.y_train))


def regularization_path(
    model: nn.Module,
    task,
    lambdas=(1e-4, 1e-3, 1e-2, 1e-1),
    steps: int = 100,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
) -> list[dict]:
    """Train one copy of `model` per penalty strength lam and check the sublevel-set radius bound.

    Each copy minimises J_lam(theta) = L(theta) + lam * ||theta||^2 with plain SGD (momentum 0, no
    optimizer weight decay: the penalty is in the loss, so the bound is about exactly this objective),
    where theta is the vector of ALL trainable parameters (biases included) and L is cross-entropy
    (the mean over a minibatch in the steps; the mean over the whole training split when measured).
    Note: lam * ||theta||^2 has gradient 2 lam theta, so it equals torch weight_decay = 2 lam.

    Per lam the row holds: `norm` = ||theta_end||; `C_start` = J_lam(theta_0) and `C_end` =
    J_lam(theta_end), both with L over the full training split; `bound` = sqrt(C_end / lam);
    `holds` = norm <= bound; `accuracy` = test accuracy of theta_end. Why it holds: L >= 0, so
    lam ||theta_end||^2 <= L(theta_end) + lam ||theta_end||^2 = C_end. The bound is therefore
    guaranteed for the final point (a check of the arithmetic, not of the optimizer). The row also
    gives `bound_start` = sqrt(C_start / lam) and `max_norm`, the largest ||theta|| seen over the
    trajectory; `holds_start` = max_norm <= bound_start is NOT guaranteed: it follows only if every
    iterate kept J_lam <= C_start, which minibatch SGD does not promise (full-batch gradient descent
    with a small enough step would). The input model is not modified.
    """
    from ..train import LoopConfig, LoopHooks, evaluate, fit

    task = for_model(task, model)
    per_epoch = math.ceil(len(task.y_train) / batch_size)
    rows = []
    for lam in lambdas:
        lam = float(lam)
        if lam <= 0:
            raise ValueError(f"every lambda must be > 0, got {lam}")
        m = copy.deepcopy(model).to(device)
        m.eval()
        c_start = _train_loss(m, task) + lam * _sq_norm(m)
        peak = [math.sqrt(_sq_norm(m))]

        def loss_fn(mod, xb, yb, lam=lam):
            pen = sum(p.pow(2).sum() for p in mod.parameters() if p.requires_grad)
            return F.cross_entropy(mod(xb), yb) + lam * pen, {}

        def on_step(step, value, extras, m=m, peak=peak):
            peak.append(math.sqrt(_sq_norm(m)))

        torch.manual_seed(seed)
        cfg = LoopConfig(
            optimizer="sgd",
            lr=lr,
            momentum=0.0,
            weight_decay=0.0,
            batch_size=batch_size,
            seed=seed,
            epochs=math.ceil(steps / per_epoch),
            max_steps=steps,
            lr_gamma=None,
            device=device,
        )
        res = fit(m, task, cfg, loss_fn=loss_fn, hooks=LoopHooks(on_step=on_step), progress=False, desc=f"lam={lam:g}")
        m.eval()
        sq = _sq_norm(m)
        c_end = _train_loss(m, task) + lam * sq
        norm, bound, bound_start = math.sqrt(sq), sublevel_radius(c_end, lam), sublevel_radius(c_start, lam)
        rows.append(
            {
                "lambda": lam,
                "steps": res.steps,
                "stopped": res.stopped,
                # a run that met a non-finite loss (or ended non-finite) checks no bound: reported as diverged
                "diverged": bool(res.stopped) or not all(map(math.isfinite, (c_end, norm))),
                "norm": norm,
                "C_start": c_start,
                "C_end": c_end,
                "bound": bound,
                "holds": norm <= bound * (1 + 1e-12),
                "bound_start": bound_start,
                "max_norm": max(peak),
                "holds_start": max(peak) <= bound_start,
                "accuracy": evaluate(m, task),
            }
        )
    return rows


def compaction_report(
    model: nn.Module, task, fractions=(0.5, 0.8, 0.9), bits=(8, 4, 2), scope: str = "global", per_channel: bool = False
) -> dict:
    """Test accuracy of copies of `model` after magnitude pruning and after fake-quantization.

    Pruning rows: requested `fraction`, achieved `sparsity` (zeros / lockable weights, counted after
    pruning, so weights that were already 0 count too), `accuracy`. Quantization rows: `bits`,
    `accuracy`, `levels` = {weight name: distinct values in that tensor} (at most 2^bits - 1 for
    bits >= 2, see `quantize`), `max_levels`. Only the lockable weights change; `model` is untouched.
    """
    from ..train import evaluate

    out = {"base_accuracy": evaluate(model, task), "prune": [], "quantize": []}
    for f in fractions:
        m = copy.deepcopy(model)
        magnitude_prune(m, float(f), scope=scope)
        ws = [p.detach() for _, p in lockable_weights(m)]
        zeros, total = sum(int((w == 0).sum()) for w in ws), sum(w.numel() for w in ws)
        out["prune"].append({"fraction": float(f), "sparsity": zeros / max(total, 1), "accuracy": evaluate(m, task)})
    for b in bits:
        m = copy.deepcopy(model)
        q = quantize(m, int(b), per_channel=per_channel)
        levels = {n: s["levels"] for n, s in q["layers"].items()}
        out["quantize"].append(
            {
                "bits": int(b),
                "accuracy": evaluate(m, task),
                "levels": levels,
                "max_levels": max(levels.values(), default=0),
            }
        )
    return out
