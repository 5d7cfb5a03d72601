import itertools
import json

import numpy as np
import torch

from trainlock.analysis.compact import compaction_report, regularization_path


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_regularization_path_bound_and_trend(digits, tiny_base):
    before = _state(tiny_base)
    lambdas = (1e-4, 1e-3, 1e-2, 1e-1)
    rows = regularization_path(tiny_base, digits, lambdas=lambdas, steps=60, seed=0)
    assert _same(tiny_base, before)
    assert [r["lambda"] for r in rows] == list(lambdas)
    for r in rows:
        assert r["steps"] == 60 and r["stopped"] is None
        assert r["holds"] and r["norm"] <= (r["C_end"] / r["lambda"]) ** 0.5 + 1e-9
        assert r["C_end"] <= r["C_start"]  # the penalized objective went down
        assert 0.0 <= r["accuracy"] <= 1.0
    norms = [r["norm"] for r in rows]
    assert all(a > b for a, b in itertools.pairwise(norms)), norms
    assert norms[-1] < 0.7 * norms[0]


def test_compaction_report(digits, tiny_base):
    before = _state(tiny_base)
    rep = compaction_report(tiny_base, digits, fractions=(0.5, 0.8, 0.9), bits=(8, 4, 2))
    assert _same(tiny_base, before)
    assert rep["base_accuracy"] > 0.8
    for row in rep["prune"]:
        assert abs(row["sparsity"] - row["fraction"]) < 1e-3
    for row in rep["quantize"]:
        assert row["levels"] and all(n <= 2 ** row["bits"] for n in row["levels"].values())
    assert rep["quantize"][0]["accuracy"] > rep["base_accuracy"] - 0.02  # 8 bits is near lossless


def test_compact_cli(tmp_path, digits, tiny_base, capsys):
    from trainlock.cli.main import main
    from trainlock.io.artifacts import save

    npz = tmp_path / "digits.npz"
    np.savez(
        npz,
        x_train=digits.x_train.numpy(),
        y_train=digits.y_train.numpy(),
        x_test=digits.x_test.numpy(),
        y_test=digits.y_test.numpy(),
    )
    save(tiny_base, tmp_path / "model")
    out = tmp_path / "compact.json"
    rc = main(
        [
            "compact",
            str(tmp_path / "model"),
            "--task",
            f"npz:{npz}",
            "--lambdas",
            "1e-3",
            "1e-1",
            "--steps",
            "20",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "bound" in text and "bits" in text
    data = json.loads(out.read_text())
    assert len(data["path"]) == 2 and all(r["holds"] for r in data["path"])
    assert {r["bits"] for r in data["report"]["quantize"]} == {8, 4, 2}
