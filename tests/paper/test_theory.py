import json

import pytest
import torch
from torch import nn

from trainlock.cli.main import main
from trainlock.paper import theory
from trainlock.paper.reproduce import run


def test_fig1_measured_vs_theory():
    rows = theory.fig1(kappas=(10, 100, 1000), dim=20, tol=1e-6)
    for r in rows:
        for key in ("gd_opt", "gd_1L", "nesterov"):
            assert r[f"{key}_measured"] <= r[f"{key}_theory"], (key, r)
        assert r["gd_opt_measured"] >= r["gd_opt_theory"] / 2, r  # the GD bound is tight up to ~2x
        assert r["gd_1L_measured"] >= r["gd_1L_theory"] / 2, r
        if r["kappa"] >= 100:
            assert r["nesterov_measured"] < r["gd_opt_measured"] / 3, r
    # GD scales ~ kappa, Nesterov ~ sqrt(kappa)
    assert 8 < rows[2]["gd_opt_measured"] / rows[1]["gd_opt_measured"] < 12
    assert 2 < rows[2]["nesterov_measured"] / rows[1]["nesterov_measured"] < 4.5


def test_remark_a3_topk_inequality():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        X, Y = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g)
        sx, sy, sxy = (torch.linalg.svdvals(M) for M in (X, Y, X @ Y))
        for k in range(1, 7):
            assert sxy[:k].sum() >= (sx[:k] * sy.flip(0)[:k]).sum() - 1e-5


def _mlp(seed, bias1=0.0, depth=2):
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 8), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(8, 8), nn.ReLU()]
    layers += [nn.Linear(8, 3)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        net[0].bias.fill_(bias1)
    return net


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("depth", [2, 3])
def test_theorem_ratio_at_least_one(seed, depth):
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    net = _mlp(seed, depth=depth)
    name = f"{len(net) - 3}.weight"  # the layer feeding the output layer
    r = theory.theorem_check(net, nn.functional.mse_loss, (x, y), name)
    assert r["factorization_ok"] and r["min_eig_H"] > -1e-6  # ReLU: block is exactly Gauss-Newton (PSD)
    assert r["vacuous"] or r["ratio"] >= 1.0
    assert r["topk_vacuous"] or r["topk_ratio"] >= 1.0


def test_theorem_nonvacuous_and_vacuous_cases():
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    alive = theory.theorem_check(_mlp(0, bias1=50.0), nn.functional.mse_loss, (x, y), "0.weight")
    assert not alive["vacuous"] and alive["ratio"] >= 1.0 and alive["topk_ratio"] >= 1.0
    net = _mlp(0, bias1=50.0)
    with torch.no_grad():
        net[0].bias[0] = -1e3  # one dead ReLU: sigma_min(D) = 0 for every sample
    dead = theory.theorem_check(net, nn.functional.mse_loss, (x, y), "0.weight")
    assert dead["vacuous"] and dead["bound"] == 0.0
    assert not dead["topk_vacuous"] and dead["topk_ratio"] >= 1.0  # Remark A.3 form survives one dead unit


def test_theorem_bound_grows_with_sigma_max():
    x, y = theory.fig2_data(0)
    vals = []
    for s in (1.0, 4.0):
        torch.manual_seed(0)
        m = theory.MLP()
        theory.scale_sigma_max(dict(m.named_parameters())[m.scaled], s)
        vals.append(theory.theorem_check(m, nn.functional.mse_loss, (x, y), m.checked, partner=m.scaled))
    assert vals[1]["sigma_max_Wj"] == pytest.approx(4 * vals[0]["sigma_max_Wj"], rel=1e-4)
    assert vals[1]["sigma_max_H"] > 4 * vals[0]["sigma_max_H"]


@pytest.mark.slow  # about 10 s on 2 cores (60 s on a loaded machine)
def test_fig2_iterations_grow_with_sigma_max():
    rows = theory.fig2(seeds=(0, 1, 2), scales=(1.0, 16.0), max_iters=3000, archs=("mlp",))
    lo = [r["iterations"] for r in rows if r["scale"] == 1.0]
    hi = [r["iterations"] for r in rows if r["scale"] == 16.0]
    assert all(r["converged"] for r in rows)
    assert sum(hi) > 1.5 * sum(lo)
    assert all(h > l for h, l in zip(hi, lo, strict=False))
    for r in rows:
        assert r["vacuous"] or r["ratio"] >= 1.0
        assert r["topk_vacuous"] or r["topk_ratio"] >= 1.0


def test_reproduce_fig1_quick(tmp_path):
    res = run("fig1", tmp_path, quick=True)
    for f in ("results.json", "table.md", "fig1.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == res["rows"]
    assert "| kappa |" in (tmp_path / "table.md").read_text()


def test_cli_reproduce(tmp_path):
    assert main(["reproduce", "fig1", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "table.md").exists()


@pytest.mark.slow  # about 10 s on 2 cores (60 s on a loaded machine)
def test_reproduce_fig2_writes_theorem22(tmp_path, monkeypatch):
    """The fig2 writer on real (but few) rows: both tables, both plots, NaN cells for unpaired weights."""
    real_fig2, real_t22 = theory.fig2, theory.theorem22
    monkeypatch.setattr(
        theory, "fig2", lambda **kw: real_fig2(seeds=(0,), scales=(1.0,), max_iters=500, archs=("mlp",))
    )
    monkeypatch.setattr(
        theory,
        "theorem22",
        lambda **kw: real_t22(seeds=(0,), scales=(1.0, 2.0), max_iters=500, weights=("q.weight", "o.weight")),
    )
    res = run("fig2", tmp_path, quick=True)
    assert res["plots"] == ["fig2.png", "theorem22.png"]
    assert len(res["theorem22"]) == 4
    table = (tmp_path / "table.md").read_text()
    assert "## Theorem 2.2" in table and "| q.weight | 0 | 1 |" in table and "| v.weight |" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["theorem22"][0]["ratio_GN"] == "nan" and isinstance(saved["theorem22"][2]["ratio_GN"], float)
    for f in ("fig2.png", "theorem22.png"):
        assert (tmp_path / f).stat().st_size > 10_000
