"""Predicting lock strength (steps an attacker needs) from measured loss curvature.

The paper leaves open how to predict how much a lock slows fine-tuning. This module is a
deliberately simple, explicit model: measure curvature of a *reference* model (e.g. the unlocked
base) and a *target* (e.g. the locked model) on the attack task, measure the reference's steps, and
scale them. The rules (``predict_steps``):

* GD / SGD (fixed step, no preconditioning; names in ``GD_OPTIMIZERS``):
    - if the attack's ``lr`` is given and ``lr > 2 / lambda_max(target)``: ``"diverges"`` (the largest
      stable fixed step on a quadratic with top curvature lambda_max is 2 / lambda_max);
    - else ``steps_t = steps_r * lambda_max_t / lambda_max_r``. Assumption: the attacker runs at a step
      proportional to the stable one (lr ~ 1/lambda_max) and the low curvature is unchanged (SpecDef
      inflates top singular values only), so steps ~ kappa = lambda_max / lambda_min ~ lambda_max. This
      is exact in the limit on quadratics (fig1's "GD at lr = 1/L": t ~ ln(1/tol) kappa / 2).
* Adam-like (diagonal preconditioning, anything else): ``steps_t = steps_r * sqrt(kd_t / kd_r)``,
  kd the damped condition ratio. Why sqrt and not linear: Adam carries momentum (beta1 = 0.9), and
  momentum methods need ~sqrt(kappa) steps (fig1's Nesterov), while the diagonal preconditioner
  removes part of the ill-conditioning (per-coordinate scale) but not its off-diagonal part, so the
  linear GD law would overstate the slow-down. This is a modelling choice, not a theorem.
  Damping: condition_estimate's ``damped`` uses mu = damping * lambda_max of *each* model, which
  saturates at 1 + 1/damping whenever lambda_min <= 0 (typical away from a minimum) and would hide
  the change being predicted. When both dicts carry lambda_max and lambda_min we therefore recompute
  kd with one shared absolute floor mu = damping * lambda_max_r (``shared_damped``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..linalg.curvature import condition_estimate

__all__ = ["GD_OPTIMIZERS", "measure_curvature", "predict_steps", "spearman", "summary"]

GD_OPTIMIZERS = ("gd", "sgd", "sgd_plain", "momentum", "nesterov")
DAMPING = 1e-3


def _shared_damped(reference: dict, target: dict, damping: float) -> tuple[float, float]:
    if all(k in d for d in (reference, target) for k in ("lambda_max", "lambda_min")):
        mu = damping * max(reference["lambda_max"], 0.0)
        if mu > 0:
            kd = [(max(d["lambda_max"], 0.0) + mu) / (max(d["lambda_min"], 0.0) + mu) for d in (reference, target)]
            return kd[0], kd[1]
    return float(reference["damped"]), float(target["damped"])


def predict_steps(
    reference: dict,
    target: dict,
    optimizer: str,
    lr: float | None = None,
    damping: float = DAMPING,
    momentum: float = 0.0,
) -> dict:
    """Predict the target's steps from the reference's measured ``steps`` and both curvatures.

    ``reference``/``target``: dicts with ``lambda_max`` and ``lambda_min`` (or ``damped``), as from
    ``measure_curvature``; ``reference["steps"]`` the measured steps. ``lr``: the attack's step size
    (GD rule: divergence check; ``target["lr"]`` is used when not given). ``momentum`` beta (heavy
    ball) widens the stable range to lr <= 2 (1 + beta) / lambda_max (beta = 0: plain GD). Returns
    {"steps": float or "diverges", "factor", "rule", "lr_stable"}."""
    steps_r = float(reference["steps"])
    lr = target.get("lr") if lr is None else lr
    if optimizer.lower() in GD_OPTIMIZERS:
        lmax_r, lmax_t = float(reference["lambda_max"]), float(target["lambda_max"])
        lr_stable = 2.0 * (1.0 + momentum) / lmax_t if lmax_t > 0 else math.inf
        if lr is not None and lr > lr_stable:
            return {"steps": "diverges", "factor": math.inf, "rule": "gd: lr > 2/lambda_max", "lr_stable": lr_stable}
        factor = lmax_t / lmax_r
        return {"steps": steps_r * factor, "factor": factor, "rule": "gd: steps ~ lambda_max", "lr_stable": lr_stable}
    kd_r, kd_t = _shared_damped(reference, target, damping)
    factor = math.sqrt(kd_t / kd_r)
    return {
        "steps": steps_r * factor,
        "factor": factor,
        "rule": "adam: steps ~ sqrt(damped ratio)",
        "lr_stable": None,
        "damped_ref": kd_r,
        "damped_target": kd_t,
    }


def _ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def measure_curvature(
    model: nn.Module,
    task_or_batch: Any,
    n: int = 256,
    loss_fn: Callable | None = None,
    damping: float = DAMPING,
    iters: int | None = None,
) -> dict:
    """condition_estimate of ``loss_fn(model, (x, y))`` on n training samples of the attack task.

    ``task_or_batch``: a Task (the model is prepared as the fine-tuning attack would: copied, head
    swapped when the class count differs; the first n training samples after a seeded shuffle) or an
    (x, y) batch (the first n rows). Default loss: cross-entropy; pass ``loss_fn(model, batch)`` for
    MSE models. Eval mode during the measurement."""
    from ..tasks import Task

    if isinstance(task_or_batch, Task):
        from ..attacks.finetune import prepare

        model, task = prepare(model, task_or_batch, "auto", 0)
        sub = task.subset(n_train=min(n, len(task.y_train)), n_test=1, seed=0)
        batch = (sub.x_train, sub.y_train)
    else:
        x, y = task_or_batch
        batch = (x[:n], y[:n])
    was = model.training
    model.eval()
    try:
        est = condition_estimate(model, loss_fn or _ce, batch, damping=damping, iters=iters)
    finally:
        model.train(was)
    return est


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties), by hand; nan when a side is constant."""

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    ra, rb = ranks(list(a)), ranks(list(b))
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=False))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if isinstance(r["predicted"], float) and r["measured"] > 0 and r["predicted"] > 0]
    logs = sorted(abs(math.log(r["predicted"] / r["measured"])) for r in ok)
    med = (
        (logs[len(logs) // 2] if len(logs) % 2 else 0.5 * (logs[len(logs) // 2 - 1] + logs[len(logs) // 2]))
        if logs
        else float("nan")
    )
    rho = spearman([r["predicted"] for r in ok], [r["measured"] for r in ok]) if len(ok) > 1 else float("nan")
    return {"summary": True, "n": len(ok), "median_abs_log_ratio": med, "spearman": rho}
