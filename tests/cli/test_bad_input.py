"""The new user's battery (issue 10): every bad input exits 2 with one actionable line on stderr, no
traceback, and touches no existing file. One parametrized test per command family."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

import trainlock as tl
from trainlock.cli import main


@pytest.fixture(scope="module")
def base(tmp_path_factory, digits):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("b") / "base"
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    tl.train.fit(model, digits, tl.LoopConfig(optimizer="adam", lr=1e-2, max_steps=30, device="cpu"), progress=False)
    return tl.save(model, d, {"task": "digits"})


@pytest.fixture
def world(base, tmp_path):
    """A copy of the base model, a 20-label npz task, a read-only directory; every file fingerprinted."""
    b = tmp_path / "base"
    shutil.copytree(base, b)
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    y = np.arange(40) % 20
    np.savez(tmp_path / "twenty.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    return tmp_path


def _fingerprint(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _run(argv, world, capsys):
    before = _fingerprint(world)
    argv = [a.replace("W/", f"{world}/") for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses bad flags itself (also exit 2)
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err and err, (argv, err)
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err  # one line says what is wrong
    assert _fingerprint(world) == before, f"{argv} changed files"
    return err


TRAIN = ["train", "--task", "digits", "--model", "mlp", "--model-kwargs", '{"hidden": [8]}', "--max-steps", "2"]


@pytest.mark.parametrize(
    "argv, says",
    [
        ([*TRAIN, "--out", "W/base"], "exists and is not empty"),
        ([*TRAIN, "--out", "W/new", "--epochs", "0"], "epochs must be an integer >= 1"),
        ([*TRAIN, "--out", "W/new", "--max-steps", "-5"], "max_steps must be an integer >= 1"),
        ([*TRAIN, "--out", "W/new", "--batch-size", "0"], "batch_size must be an integer >= 1"),
        ([*TRAIN, "--out", "W/new", "--lr", "inf"], "--lr: must be a finite number"),
        ([*TRAIN, "--out", "W/new", "--device", "cuda"], "no CUDA"),
        ([*TRAIN, "--out", "W/new", "--device", "bogus"], "device must be auto, cpu or cuda"),
        ([*TRAIN, "--out", "W/new", "--model-kwargs", '{"nope": 1}'], "accepts: input_shape"),
        ([*TRAIN, "--out", "W/new", "--model-kwargs", "[1]"], "must be a JSON object"),
        ([*TRAIN, "--out", "W/base/model.safetensors/x"], "is a file"),
        ([*TRAIN, "--out", "W/new", "--optimizer", "nope"], "invalid choice"),
        (["--threads", "0", "tasks"], "positive integer"),
    ],
)
def test_train(argv, says, world, capsys):
    assert says in _run(argv, world, capsys)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["lock", "W/base", "--out", "W/base"], "is the input directory"),
        (["lock", "W/base", "--out", "W/base/inner"], "is inside"),
        (["lock", "W/base", "--out", "W/new", "--epochs", "0"], "epochs must be an integer >= 1"),
        (["lock", "W/base", "--out", "W/new", "--top-k", "100", "--max-steps", "1"], "exceeds the rank"),
        (["lock", "W/base", "--out", "W/new", "--alpha", "2"], "alpha must be a finite number"),
        (["lock", "W/base", "--out", "W/new", "--spec", '{"type": "sparsity", "k": 0}'], "k must be an integer >= 1"),
        (["lock", "W/base", "--out", "W/new", "--spec", '{"type": "sparsity", "fraction": 1.0}'], "fraction must be"),
        (["lock", "W/base", "--out", "W/new", "--spec", '{"type": "nope"}'], "unknown lock 'nope'"),
        (["lock", "W/base", "--out", "W/new", "--json", "W/base/model.safetensors/r.json"], "is a file"),
        (["lock", "W/base", "--out", "W/new", "--lr", "1e300", "--optimizer", "sgd", "--alpha", "0"], "unchanged"),
        (["lock", "W/missing", "--out", "W/new"], "not a model directory"),
    ],
)
def test_lock(argv, says, world, capsys):
    assert says in _run(argv, world, capsys)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["attack", "W/base", "--task", "digits", "--save", "W/base"], "is the input directory"),
        (["attack", "W/base", "--task", "digits", "--target-accuracy", "5"], "target_accuracy must be"),
        (["attack", "W/base", "--task", "digits", "--lr", "inf"], "--lr: must be a finite number"),
        (["attack", "W/base", "--task", "nope"], "unknown task 'nope'"),
        (["eval", "W/base", "--task", "npz:W/twenty.npz"], "labels up to 19 but the model outputs 10 classes"),
        (["redteam", "W/base", "--task", "digits", "--budget", "0"], "budget must be an integer >= 1"),
        (["redteam", "W/base", "--task", "digits", "--budget", "-3"], "budget must be an integer >= 1"),
        (
            ["redteam", "W/base", "--task", "digits", "--include", "no-such-attack", "--out", "W/rt"],
            "the suite is empty",
        ),
        (["redteam", "W/base", "--task", "digits", "--target-accuracy", "5"], "target_accuracy must be"),
        (["redteam", "W/base", "--task", "digits", "--out", "W/base"], "is the input directory"),
    ],
)
def test_attack_and_redteam(argv, says, world, capsys):
    assert says in _run(argv, world, capsys)


def _broken(world, edit):
    meta = json.loads((world / "base" / "trainlock.json").read_text())
    edit(meta)
    (world / "base" / "trainlock.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda m: m.update(architecture="mlp"), "'architecture' must be"),
        (lambda m: m["architecture"].pop("kwargs"), "'architecture' must be"),
        (lambda m: m.update(task=5), "'task' must be a task name"),
        (lambda m: m["architecture"]["kwargs"].update(hidden=[10**9]), "does not describe these weights"),
        (lambda m: m["architecture"].update(name="nope"), "unknown architecture 'nope'"),
    ],
)
def test_broken_metadata(edit, says, world, capsys):
    _broken(world, edit)
    assert says in _run(["eval", "W/base"], world, capsys)


def test_python_api_refuses_clearly(digits):
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    assert 0 <= tl.evaluate(model, "digits") <= 1  # a task name is accepted where a Task is
    with pytest.raises(ValueError, match="task must be a Task or a task name"):
        tl.evaluate(model, None)
    with pytest.raises(ValueError, match="needs the unauthorized task"):
        tl.attack(model, None, None)
    with pytest.raises(ValueError, match="top_k must be an integer"):
        tl.SpecDefConfig(top_k=2.5)
    W = torch.randn(6, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        tl.top_singular_values(W.masked_fill(W > 1, float("nan")), 1)
    with pytest.raises(ValueError, match="floating-point"):
        tl.top_singular_values(torch.ones(6, 4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="k must be an integer"):
        tl.top_singular_values(W, 1.5)
