import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.analysis.diagnostics import block_spectrum, compare, diagnose, plot_diagnostics, trace_blocks


def dense_svals(block: nn.Module, h: torch.Tensor) -> list[torch.Tensor]:
    """Singular values of each sample's dense Jacobian (torch.autograd.functional.jacobian)."""
    out = []
    for i in range(len(h)):
        jac = torch.autograd.functional.jacobian(lambda z: block(z.unsqueeze(0)).squeeze(0), h[i].detach())
        n_out = block(h[i : i + 1]).numel()
        out.append(torch.linalg.svdvals(jac.reshape(n_out, -1).double()))
    return out


def blocks_of(model, x):
    model.eval()
    return {b["name"]: b for b in trace_blocks(model, x)[0]}


@pytest.mark.parametrize(
    "name,kw,shape,block",
    [
        ("mlp", {"hidden": [12, 6], "activation": "tanh"}, (20,), "body.0"),
        ("mlp", {"hidden": [12, 6]}, (20,), "head"),
        ("cnn", {"channels": [3], "hidden": 8}, (1, 6, 6), "features.0"),
        ("cnn", {"channels": [3], "hidden": 8}, (1, 6, 6), "fc"),
    ],
)
def test_power_norm_matches_dense(name, kw, shape, block):
    model = tl.models.build(name, input_shape=shape, num_classes=5, **kw)
    b = blocks_of(model, torch.randn(4, *shape))[block]
    spec = block_spectrum(b["module"], b["input"])
    dense = torch.stack([s[0] for s in dense_svals(b["module"], b["input"])]).float()
    torch.testing.assert_close(spec["sigma_max"], dense, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("n_in,n_out", [(9, 6), (5, 8)])
def test_sigma_min_and_rank_match_dense_svd(n_in, n_out):
    block = nn.Sequential(nn.Linear(n_in, n_out), nn.Tanh())
    h = torch.randn(3, n_in)
    spec = block_spectrum(block, h)
    dense = dense_svals(block, h)
    torch.testing.assert_close(spec["sigma_min"], torch.stack([s[-1] for s in dense]).float(), rtol=1e-3, atol=1e-4)
    assert spec["rank"] == min(n_in, n_out) and spec["rank_method"] == "dense" and spec["exact_sigma_min"]


def test_rank_deficient_block():
    lin = nn.Linear(10, 8, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(8, 3) @ torch.randn(3, 10))  # rank 3
    spec = block_spectrum(lin, torch.randn(2, 10))
    assert spec["rank"] == 3
    assert float(spec["sigma_min"].max()) < 1e-3 * float(spec["sigma_max"].min())


def test_severity_and_condition_formula():
    torch.manual_seed(1)
    model = tl.models.build("mlp", input_shape=(6,), num_classes=4, hidden=[5], activation="tanh")
    res = diagnose(model, (torch.randn(1, 6), torch.tensor([2])), n=1)
    for row in res["layers"]:
        smax, smin = row["jacobian_norm"], row["sigma_min"]
        assert row["severity"] == pytest.approx(1 - smin / smax, rel=1e-5, abs=1e-6)
        assert 0.0 <= row["severity"] <= 1.0
        if smin > 0:
            assert row["condition"] == pytest.approx(smax / smin, rel=1e-5)
    lin = next(r for r in res["layers"] if r["name"] == "body.0")
    s = torch.linalg.svdvals(model.body[0].weight.detach().double())  # a Linear's Jacobian is W
    assert lin["severity"] == pytest.approx(1 - float(s[-1] / s[0]), rel=1e-3)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_bottleneck_bound_holds(seed, activation):
    torch.manual_seed(seed)
    model = tl.models.build("mlp", input_shape=(12,), num_classes=4, hidden=[10, 7], activation=activation)
    x, y = torch.randn(16, 12) * (1 + seed), torch.randint(0, 4, (16,))
    bound = diagnose(model, (x, y), n=16)["bound"]
    assert bound["holds"] and bound["first_block"] == "body.0" and bound["last_block"] == "head"
    lhs, rhs = np.array(bound["lhs"]), np.array(bound["rhs"])
    assert (lhs >= 0).all() and (lhs > 0).mean() > 0.5 and (lhs <= rhs * (1 + 1e-4)).all()  # 0: dead ReLUs
    assert bound["glue_norms"] == [1.0] * 4  # a Sequential hands outputs on unchanged
    # lhs is the true per-sample gradient norm of the first Linear's parameters
    model.eval()
    loss = torch.nn.functional.cross_entropy(model(x[:1]), y[:1])
    g = torch.autograd.grad(loss, list(model.body[0].parameters()))
    assert lhs[0] == pytest.approx(float(torch.sqrt(sum((t**2).sum() for t in g))), rel=1e-4)


def test_bound_with_glue_on_transformer():
    model = tl.models.build("transformer", input_shape=(1, 8, 8), num_classes=3, dim=8, depth=1, heads=2, patch=4)
    res = diagnose(model, (torch.rand(6, 1, 8, 8), torch.randint(0, 3, (6,))), n=6)
    assert res["bound"]["holds"]
    assert res["bound"]["glue_norms"][-2] == pytest.approx(0.5, rel=1e-3)  # mean over 4 tokens: 1/sqrt(4)


def test_skip_connections_reported():
    r = tl.models.build("resnet18", input_shape=(1, 8, 8), num_classes=3, width=2)
    names = [b["name"] for b in trace_blocks(r.eval(), torch.rand(2, 1, 8, 8))[0] if b["skip"]]
    assert names == [f"stages.{i}.{j}" for i in range(4) for j in range(2)]
    t = tl.models.build("transformer", input_shape=(1, 8, 8), num_classes=3, dim=8, depth=1, heads=2, patch=4)
    res = diagnose(t, (torch.rand(4, 1, 8, 8), torch.randint(0, 3, (4,))), n=4)
    assert res["skip_blocks"] == ["layers.0"]
    assert [r["name"] for r in res["layers"]] == ["embed", "layers.0", "norm", "head"]
    m = tl.models.build("mlp", input_shape=(4,), num_classes=2, hidden=[3])
    assert not any(b["skip"] for b in trace_blocks(m, torch.rand(2, 4))[0])


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no leaked matplotlib warnings
def test_diagnose_task_compare_and_plot(digits, tmp_path):
    torch.manual_seed(0)
    base = tl.models.build("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[2], hidden=8)
    locked = tl.train.loop.clone_model(base)
    with torch.no_grad():
        locked.fc.weight.mul_(10.0)
    res = compare(base, locked, digits, n=8)
    names = [r["name"] for r in res["base"]["layers"]]
    assert names == ["features.0", "features.1", "features.2", "fc", "act", "head"]
    fc = next(r for r in res["rows"] if r["name"] == "fc")
    assert fc["jacobian_ratio"] == pytest.approx(10.0, rel=1e-3)
    assert res["base"]["bound"]["holds"] and res["locked"]["bound"]["holds"]
    for r in res["base"]["layers"]:
        assert r["grad_norm"] >= 0 and r["rank"] >= 0 and r["jacobian_norm"] > 0
    png = plot_diagnostics({"base": res["base"], "locked": res["locked"]}, tmp_path / "d.png")
    assert png.stat().st_size > 1000


def test_cli_diagnose(digits, tmp_path, capsys):
    from trainlock.cli.main import main

    npz = tmp_path / "digits.npz"
    np.savez(
        npz,
        x_train=digits.x_train.numpy(),
        y_train=digits.y_train.numpy(),
        x_test=digits.x_test.numpy(),
        y_test=digits.y_test.numpy(),
    )
    torch.manual_seed(0)
    base = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    tl.save(base, tmp_path / "base", {"task": f"npz:{npz}"})
    locked = tl.train.loop.clone_model(base)
    with torch.no_grad():
        locked.body[0].weight.mul_(5.0)
    tl.save(locked, tmp_path / "locked", {"task": f"npz:{npz}"})
    out = tmp_path / "plots"
    rc = main(
        [
            "diagnose",
            str(tmp_path / "locked"),
            "--task",
            f"npz:{npz}",
            "--base",
            str(tmp_path / "base"),
            "--out",
            str(out),
            "--json",
            str(tmp_path / "d.json"),
            "--samples",
            "8",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "body.0" in text and "head" in text and "base" in text and "locked" in text
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["locked"]["bound"]["holds"] and len(data["base"]["layers"]) == 3
    assert list(out.glob("*.png"))
    assert main(["diagnose", str(tmp_path / "base"), "--task", f"npz:{npz}", "--out", str(out), "--samples", "4"]) == 0
