import json

import numpy as np
import pytest

import trainlock as tl
from trainlock.cli.main import main


@pytest.fixture(scope="module")
def npz_tasks(tmp_path_factory, digits):
    """digits and a pixel-permuted copy as npz files (the bring-your-own-data path)."""
    d = tmp_path_factory.mktemp("data")
    perm = tl.tasks.permuted(digits, seed=1)
    for name, t in (("digits", digits), ("perm", perm)):
        np.savez(
            d / f"{name}.npz",
            x_train=t.x_train.numpy(),
            y_train=t.y_train.numpy(),
            x_test=t.x_test.numpy(),
            y_test=t.y_test.numpy(),
        )
    return d


def test_train_lock_attack_eval(tmp_path, npz_tasks, capsys):
    base, locked = tmp_path / "base", tmp_path / "locked"
    task = f"npz:{npz_tasks / 'digits.npz'}"
    assert (
        main(
            [
                "train",
                "--task",
                task,
                "--model",
                "mlp",
                "--model-kwargs",
                '{"hidden": [16]}',
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--epochs",
                "2",
                "--out",
                str(base),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "lock",
                str(base),
                "--out",
                str(locked),
                "--max-steps",
                "20",
                "--lr",
                "5",
                "--json",
                str(tmp_path / "lock.json"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mean top-1 sigma" in out and "saved" in out
    meta = json.loads((locked / "trainlock.json").read_text())
    assert meta["lock"]["type"] == "specdef" and meta["task"] == task
    assert meta["lock"]["sigma_after"]["mean_topk"] > meta["lock"]["sigma_before"]["mean_topk"]
    assert (
        main(
            [
                "attack",
                str(locked),
                "--task",
                f"npz:{npz_tasks / 'perm.npz'}",
                "--optimizer",
                "adam",
                "--lr",
                "1e-3",
                "--max-steps",
                "10",
                "--json",
                str(tmp_path / "a.json"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    a = json.loads((tmp_path / "a.json").read_text())
    assert set(a) >= {"accuracy", "curve", "steps_to_target"} and len(a["curve"]) == 1
    assert main(["eval", str(locked), "--json", str(tmp_path / "e.json")]) == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["accuracy"] == pytest.approx(meta["metrics"]["accuracy"])


def test_tasks_command_lists_every_task(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in tl.tasks.names():
        assert name in out
    assert "npz:PATH" in out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["eval", "/nonexistent/model"], "not a model directory"),
        (["train", "--task", "no-such-task", "--out", "x"], "valid:"),
        (["train", "--task", "npz:/nonexistent.npz", "--out", "x"], "nonexistent.npz"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_bad_model_kwargs_and_optimizer(tmp_path, npz_tasks, capsys):
    task = f"npz:{npz_tasks / 'digits.npz'}"
    assert main(["train", "--task", task, "--model", "mlp", "--model-kwargs", "{bad", "--out", str(tmp_path)]) == 2
    assert main(["train", "--task", task, "--model", "mlpp", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'mlpp'; valid: cnn, " in err and all(m in err for m in ("mlp", "resnet18", "transformer"))
    with pytest.raises(SystemExit) as e:  # argparse checks the name against the registry
        main(["train", "--task", task, "--model", "mlp", "--optimizer", "nope", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'nope'" in err and "'adadelta'" in err and "'kfac'" in err


@pytest.mark.parametrize("cmd", ["tasks", "train", "lock", "attack", "eval", "demo", "redteam", "relearn"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: trainlock" in capsys.readouterr().out


def test_relearn_command(tmp_path, npz_tasks, capsys):
    task = f"npz:{npz_tasks / 'digits.npz'}"
    base = tmp_path / "base"
    assert (
        main(
            [
                "train",
                "--task",
                task,
                "--model",
                "mlp",
                "--model-kwargs",
                '{"hidden": [16]}',
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--epochs",
                "2",
                "--out",
                str(base),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "relearn",
                str(base),
                "--forget-class",
                "3",
                "--unlearn-lr",
                "0.1",
                "--lock-epochs",
                "1",
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["name"] for r in rows][:2] == ["base", "unlearned"] and len(rows) == 5
    assert "unlearned + SpecDef + relearned" in capsys.readouterr().out


def _help(cmd, capsys) -> str:
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks


def test_help_is_built_from_the_configs(capsys):
    from trainlock.optimizers import OPTIMIZERS

    train = _help("train", capsys)
    assert "(default: adadelta)" in train and "learning rate (default: 1.0)" in train  # what the run uses
    assert all(name in train for name in OPTIMIZERS.names())  # every registered optimizer, not a stale list
    lock = _help("lock", capsys)
    assert "(default: adadelta)" in lock and "retain-loss weight" in lock
    for cmd in ("train", "lock", "attack", "redteam", "relearn"):
        text = _help(cmd, capsys)
        for piece in text.split("--")[1:]:  # one flag's help each
            assert piece.count("(default:") <= 1, piece


def test_flags_round_trip_into_the_config():
    import argparse

    from trainlock.cli.common import add_config_flags, config_from_args
    from trainlock.locks import SpecDefConfig, specdef_loop

    p = argparse.ArgumentParser()
    add_config_flags(p, SpecDefConfig)
    assert config_from_args(SpecDefConfig, p.parse_args([])) == SpecDefConfig()
    cfg = config_from_args(SpecDefConfig, p.parse_args(["--lr", "5", "--top-k", "2", "--optimizer", "kfac"]))
    assert cfg == SpecDefConfig(loop=specdef_loop(lr=5.0, optimizer="kfac"), top_k=2)


@pytest.mark.parametrize(
    "argv, env, want",
    [
        (["--threads", "1", "tasks"], {}, "PASSIVE 1"),
        (["tasks", "--threads=1"], {}, "PASSIVE 1"),
        (["tasks"], {"OMP_NUM_THREADS": "1"}, "PASSIVE 1"),
        (["tasks"], {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"}, "ACTIVE 2"),  # the user's choice is kept
    ],
)
def test_thread_policy_is_set_before_torch_starts(argv, env, want):
    import os
    import subprocess
    import sys

    code = (
        "import sys, os\nfrom trainlock.cli.main import main\nmain(sys.argv[1:])\nimport torch\n"
        "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        check=True,
        env={**base, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.stdout.strip().splitlines()[-1] == want


def test_bad_threads_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--threads", "0", "tasks"])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err
