"""Plugins: a lock, a task and an attack stage written in outside files work through every command, loaded with
--plugin, TRAINLOCK_PLUGINS or an installed package's `trainlock.plugins` entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainlock import plugins
from trainlock.cli.main import main
from trainlock.locks import LOCKS

ROOT = Path(__file__).resolve().parents[1]
NOISY = str(ROOT / "examples" / "plugins" / "noisy_top.py")
TASK_PLUGIN = str(ROOT / "examples" / "plugins" / "shuffled_digits.py")
STAGE_PLUGIN = str(ROOT / "examples" / "plugins" / "noisy_start.py")


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop(plugins.ENV, None)
    env.update(extra)
    return env


def _cli(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainlock", *argv], capture_output=True, text=True, env=env or _env(), timeout=300
    )


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin") / "base"
    assert (
        main(
            [
                "train",
                "--task",
                "digits",
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
                str(d),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return d


@pytest.fixture(scope="module")
def locked_dir(base_dir):
    out = base_dir.parent / "noisy"
    assert main(["--plugin", NOISY, "lock", str(base_dir), "--out", str(out), "--spec", '{"type": "noisy-top"}']) == 0
    return out


def test_an_unknown_lock_names_the_plugin_flag(base_dir, tmp_path):
    r = _cli("lock", str(base_dir), "--out", str(tmp_path / "x"), "--spec", '{"type": "noisy-top"}')  # a fresh process
    assert r.returncode == 2 and "unknown lock 'noisy-top'" in r.stderr and "--plugin" in r.stderr
    assert not (tmp_path / "x").exists()


def test_plugin_lock_records_its_plugin_and_verifies(locked_dir, capsys):
    meta = json.loads((locked_dir / "trainlock.json").read_text())
    (entry,) = meta["locks"]
    assert entry["type"] == "noisy-top" and entry["plugin"] == NOISY
    assert entry["private"] == ["seed"] and set(entry["record"]) == {"sigma_max"}
    assert LOCKS.origin("noisy-top") == NOISY and LOCKS.origin("specdef") is None
    main(["--plugin", NOISY, "verify", str(locked_dir)])
    out = capsys.readouterr().out
    assert "noisy-top: min over weights of sigma_max(W)" in out
    lock_rows = [line for line in out.splitlines() if line.split()[1:2] == ["lock"]]
    assert lock_rows and all(r.startswith("ok") for r in lock_rows)


def test_verify_without_the_plugin_exits_2_naming_it(locked_dir):
    r = _cli("verify", str(locked_dir))
    assert r.returncode == 2, r.stderr
    assert NOISY in r.stderr and "--plugin" in r.stderr and "Traceback" not in r.stderr
    r = _cli("verify", str(locked_dir), env=_env(TRAINLOCK_PLUGINS=NOISY))  # the environment variable loads it
    assert "noisy-top: min over weights" in r.stdout, r.stderr


def test_release_drops_private_fields(locked_dir, tmp_path):
    assert main(["--plugin", NOISY, "release", str(locked_dir), "--out", str(tmp_path / "pub")]) == 0
    (entry,) = json.loads((tmp_path / "pub" / "trainlock.json").read_text())["locks"]
    assert "seed" not in entry["config"] and entry["private_dropped"] == ["seed"]


def test_locks_lists_the_plugin(capsys):
    assert main(["--plugin", NOISY, "locks"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("noisy-top"))
    assert f"[plugin: {NOISY}]" in line


def test_tune_searches_the_plugin_space_on_a_plugin_task(base_dir, tmp_path):
    out = tmp_path / "tune"
    assert (
        main(
            [
                "--plugin",
                NOISY,
                "--plugin",
                TASK_PLUGIN,
                "tune",
                str(base_dir),
                "--lock",
                "noisy-top",
                "--attack-task",
                "shuffled-digits",
                "--trials",
                "1",
                "--budget",
                "12",
                "--steps",
                "3",
                "--out",
                str(out),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    res = json.loads((out / "pareto.json").read_text())
    assert res["lock"] == "noisy-top" and res["tuning_task"] == "shuffled-digits"
    assert set(res["trials"][0]["params"]) == {"top_k", "scale"}


def test_redteam_attacks_a_plugin_lock_with_a_plugin_stage(locked_dir, base_dir, tmp_path):
    out = tmp_path / "rt"
    assert (
        main(
            [
                "--plugin",
                NOISY,
                "--plugin",
                STAGE_PLUGIN,
                "redteam",
                str(locked_dir),
                "--task",
                "digits",
                "--base",
                str(base_dir),
                "--max-steps",
                "5",
                "--workers",
                "0",
                "--optimizers",
                "adam",
                "sgd",
                "--transforms",
                "sv-clip",
                "--out",
                str(out),
                "--json",
                str(tmp_path / "rt.json"),
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    noisy = [r for r in rows if r["attack"].startswith("noisy:")]
    assert len(noisy) == 1 and noisy[0]["accuracy"] is not None, [r["attack"] for r in rows]
    plain = next(r for r in rows if r["attack"] == "adam@0.001")
    assert any(k.startswith("noisy-top:") for k in plain["certificates_after"])  # the plugin lock re-certified


def test_a_task_plugin_trains_and_locks(tmp_path, capsys):
    d = tmp_path / "t"
    assert (
        main(
            [
                "--plugin",
                TASK_PLUGIN,
                "train",
                "--task",
                "shuffled-digits",
                "--model",
                "mlp",
                "--model-kwargs",
                '{"hidden": [16]}',
                "--epochs",
                "1",
                "--out",
                str(d),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--plugin",
                TASK_PLUGIN,
                "--plugin",
                NOISY,
                "lock",
                str(d),
                "--out",
                str(tmp_path / "l"),
                "--spec",
                '{"type": "noisy-top", "scale": 0.1}',
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "l" / "trainlock.json").read_text())["task"] == "shuffled-digits"


def test_a_broken_plugin_is_one_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    r = _cli("--plugin", str(bad), "locks")
    assert r.returncode == 2 and "boom" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--plugin", "no_such_module_xyz", "locks")
    assert r.returncode == 2 and "neither a .py file nor an importable module" in r.stderr


def test_an_entry_point_plugin_is_loaded(locked_dir, tmp_path):
    """An installed package's `trainlock.plugins` entry point (a dist-info on the path is all it takes) holding a
    lock, a task and an attack stage: each works through lock, verify, train and redteam."""
    site = tmp_path / "site"
    (site / "mylocks_pkg").mkdir(parents=True)
    for path in (NOISY, TASK_PLUGIN, STAGE_PLUGIN):
        (site / "mylocks_pkg" / Path(path).name).write_text(Path(path).read_text())
    (site / "mylocks_pkg" / "__init__.py").write_text("from . import noisy_start, noisy_top, shuffled_digits\n")
    info = site / "mylocks_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylocks-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trainlock.plugins]\nmylocks = mylocks_pkg\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    r = _cli("locks", env=env)
    assert r.returncode == 0, r.stderr
    assert any(x.startswith("noisy-top") and "[plugin: mylocks_pkg]" in x for x in r.stdout.splitlines())
    out = tmp_path / "ep-locked"
    r = _cli("lock", str(locked_dir.parent / "base"), "--out", str(out), "--spec", '{"type": "noisy-top"}', env=env)
    assert r.returncode == 0, r.stderr
    r = _cli("verify", str(out), env=env)
    assert "noisy-top: min over weights" in r.stdout, r.stderr
    rt = tmp_path / "ep-rt"
    r = _cli(
        "redteam",
        str(out),
        "--task",
        "shuffled-digits",
        "--max-steps",
        "3",
        "--workers",
        "0",
        "--optimizers",
        "adam",
        "sgd",
        "--transforms",
        "sv-clip",
        "--out",
        str(rt),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (rt / "runs.jsonl").read_text().splitlines()]
    assert any(row["attack"].startswith("noisy:") and row["accuracy"] is not None for row in rows)


def test_loading_twice_is_a_no_op_and_names_are_checked():
    assert plugins.load(NOISY) == plugins.load(NOISY)
    with pytest.raises(plugins.PluginError, match="does not exist"):
        plugins.load("/no/such/plugin.py")
    with pytest.raises(plugins.PluginError, match="empty"):
        plugins.load("  ")
