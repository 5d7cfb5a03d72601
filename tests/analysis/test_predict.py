import math

import pytest
import torch
import torch.nn as nn

from trainlock.analysis.predict import measure_curvature, predict_steps, spearman
from trainlock.paper import theory


class Quad(nn.Module):
    """f(w) = 1/2 w^T diag(lam) w; the model's "output" is unused."""

    def __init__(self, lam):
        super().__init__()
        self.lam = torch.as_tensor(lam, dtype=torch.float64)
        self.w = nn.Parameter(torch.ones(len(lam), dtype=torch.float64))

    def forward(self, x):
        return x


def _quad_loss(model, batch):
    return 0.5 * (model.lam * model.w * model.w).sum()


def test_gd_rule_on_quadratic_fig1():
    rows = {r["kappa"]: r for r in theory.fig1(kappas=(10.0, 100.0, 1000.0), dim=20, tol=1e-6)}
    curv = {}
    for kappa in rows:  # lambda_max measured by Lanczos on the very quadratic fig1 uses
        lam = torch.linspace(1.0, kappa, 20, dtype=torch.float64)
        curv[kappa] = measure_curvature(Quad(lam), (torch.zeros(1, 1), torch.zeros(1)), loss_fn=_quad_loss)
        assert curv[kappa]["lambda_max"] == pytest.approx(kappa, rel=1e-6)
    ref = dict(curv[10.0], steps=rows[10.0]["gd_1L_measured"])
    for kappa in (100.0, 1000.0):  # fig1 "GD at lr = 1/L": the attacker's lr follows 1/lambda_max
        pred = predict_steps(ref, curv[kappa], "gd", lr=1.0 / kappa)["steps"]
        assert pred == pytest.approx(rows[kappa]["gd_1L_measured"], rel=0.10)


def test_gd_diverges_rule():
    ref, tgt = {"lambda_max": 1.0, "steps": 100}, {"lambda_max": 50.0}
    assert predict_steps(ref, tgt, "gd", lr=0.05)["steps"] == "diverges"  # 0.05 > 2/50
    out = predict_steps(ref, tgt, "gd", lr=0.03)
    assert out["steps"] == pytest.approx(5000) and out["lr_stable"] == pytest.approx(0.04)
    assert predict_steps(ref, tgt, "sgd", lr=0.05, momentum=0.9)["steps"] != "diverges"  # 2(1.9)/50 = 0.076


def test_adam_rule_is_sqrt_of_shared_damped_ratio():
    ref = {"lambda_max": 10.0, "lambda_min": 1.0, "steps": 100}
    tgt = {"lambda_max": 40.0, "lambda_min": 1.0}
    out = predict_steps(ref, tgt, "adam", damping=0.0 + 1e-12)
    assert out["steps"] == pytest.approx(200.0, rel=1e-6)  # 4x condition -> 2x steps
    # indefinite Hessians: the shared floor keeps the prediction sensitive (per-model damping would give 1x)
    ref2, tgt2 = {"lambda_max": 10.0, "lambda_min": -1.0, "steps": 100}, {"lambda_max": 40.0, "lambda_min": -3.0}
    assert predict_steps(ref2, tgt2, "adam")["steps"] == pytest.approx(100 * math.sqrt(40.01 / 10.01))


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)
