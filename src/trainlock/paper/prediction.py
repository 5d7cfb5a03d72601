"""Lock-strength prediction studies: predicted versus measured steps on the Figure 2 models and on a
base / locked pair (the predictor itself is `trainlock.analysis.predict`)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..analysis.predict import measure_curvature, predict_steps, summary
from ..attacks.finetune import FineTuneConfig, finetune
from ..train import LoopConfig
from . import theory


def default_attack() -> FineTuneConfig:
    """The demo study's fine-tuning run: Adam 1e-3, batch 32, 500 steps, target 0.7 checked every 10."""
    return FineTuneConfig(
        loop=LoopConfig(optimizer="adam", lr=1e-3, epochs=10_000, batch_size=32, max_steps=500, device="cpu"),
        target_accuracy=0.7,
        eval_every=10,
    )


def prediction_study_fig2(
    seeds=(0,),
    scales=(1, 2, 4, 8),
    quick: bool = False,
    archs=("mlp", "cnn", "transformer"),
    max_iters: int = 20_000,
    tol: float = 0.9,
) -> list[dict]:
    """theory.fig2's models: scale 1 is the reference; each scale's Adam iterations are predicted from
    curvature (Adam rule) and compared with theory.iterations_to_converge. Rows per (arch, seed, scale),
    then one summary row ({"summary": True, median_abs_log_ratio, spearman} over non-reference rows).
    ``quick``: scales (1, 4), max_iters 3000."""
    if quick:
        scales, max_iters = tuple(s for s in scales if s in (1, 4)) or (1, 4), min(max_iters, 3000)
    mse = lambda m, b: F.mse_loss(m(b[0]), b[1])
    rows: list[dict] = []
    for arch in archs:
        for seed in seeds:
            x, y = theory.fig2_data(seed)
            ref = None
            for s in sorted(scales):
                torch.manual_seed(seed)
                model = theory.ARCHS[arch]()
                theory.scale_sigma_max(dict(model.named_parameters())[model.scaled], float(s))
                curv = measure_curvature(model, (x, y), n=len(y), loss_fn=mse)
                torch.manual_seed(seed)
                its = theory.iterations_to_converge(model, x, y, tol, max_iters)
                if ref is None:
                    ref = dict(curv, steps=max(its, 1))
                    continue
                pred = predict_steps(ref, curv, "adam")["steps"]
                rows.append(
                    {
                        "arch": arch,
                        "seed": seed,
                        "scale": float(s),
                        "lambda_max": curv["lambda_max"],
                        "lambda_min": curv["lambda_min"],
                        "ref_steps": ref["steps"],
                        "predicted": pred,
                        "measured": its,
                        "converged": its < max_iters,
                        "rel_error": (pred - its) / its if its > 0 else float("nan"),
                    }
                )
    return [*rows, summary(rows)]


def prediction_study_demo(
    base: nn.Module,
    locked: nn.Module,
    task,
    attack: FineTuneConfig | None = None,
    n: int = 256,
    base_steps: int | None = None,
) -> dict:
    """Predict the locked model's steps-to-target on ``task`` from the base's and compare with a measured
    fine-tune. ``attack``: the fine-tuning run (default: Adam at 1e-3, batch 32, a budget of 500 steps,
    target 0.7 checked every 10 steps); its ``max_steps`` is the budget. ``base_steps``: the base's measured steps (measured when None).
    When the locked run does not reach the target, ``agrees`` says whether the prediction also exceeds
    the budget (or says "diverges")."""
    cfg = attack or default_attack()
    optimizer, lr, max_steps = cfg.loop.optimizer, cfg.loop.lr, cfg.loop.max_steps

    def run(model):
        return finetune(model, cfg, task, progress=False).steps_to_target

    cb, cl = measure_curvature(base, task, n=n), measure_curvature(locked, task, n=n)
    if base_steps is None:
        base_steps = run(base)
    out = {
        "optimizer": optimizer,
        "lr": lr,
        "budget": max_steps,
        "base_lambda_max": cb["lambda_max"],
        "locked_lambda_max": cl["lambda_max"],
        "base_lambda_min": cb["lambda_min"],
        "locked_lambda_min": cl["lambda_min"],
        "base_steps": base_steps,
    }
    if base_steps is None:
        return {
            **out,
            "predicted": None,
            "measured": run(locked),
            "agrees": None,
            "note": "base did not reach the target within the budget: nothing to scale",
        }
    p = predict_steps(
        dict(cb, steps=max(base_steps, 1)), cl, optimizer, lr=lr, momentum=0.9 if optimizer.lower() == "sgd" else 0.0
    )  # finetune's SGD momentum
    measured = run(locked)
    pred = p["steps"]
    if measured is None:
        agrees = pred == "diverges" or pred > max_steps
    elif pred == "diverges":
        agrees = False
    else:
        agrees = abs(math.log(max(pred, 1.0) / max(measured, 1))) <= math.log(2)
    return {
        **out,
        "predicted": pred,
        "factor": p["factor"],
        "rule": p["rule"],
        "measured": measured,
        "reached": measured is not None,
        "agrees": agrees,
    }
