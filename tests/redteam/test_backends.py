"""Backends: the same rows from the local pool and from Ray; a Ray run whose worker dies is retried once, then
recorded as failed; flags and configs."""

import json
import os

import numpy as np
import pytest

import trainlock as tl
from trainlock.cli.main import main
from trainlock.locks import specdef_loop
from trainlock.red_team import RedTeamConfig, RunnerConfig, Target, build_suite, read_rows, run_suite, worst_case
from trainlock.red_team.spec import AttackSpec
from trainlock.train import LoopConfig

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def locked(tiny_base, digits):
    return tl.lock(
        tiny_base, tl.SpecDefConfig(loop=specdef_loop(lr=10.0, epochs=5, batch_size=32, device="cpu")), digits
    ).model


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; shut down after."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _keys(rows):
    return [r["key"] for r in rows]


def _results(rows):
    drop = {"wall_s"}  # timings differ; every number the run computes must not
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_ray_rows_equal_local_rows(ray_local, locked, digits, digits_permuted, tmp_path):
    specs = build_suite(RedTeamConfig(loop=LoopConfig(device="cpu", max_steps=20, batch_size=32), budget=5))
    target = Target(locked, digits_permuted, digits)
    local = run_suite(target, specs, tmp_path / "local", workers=2, progress=False)
    on_ray = run_suite(target, specs, tmp_path / "ray", RunnerConfig(backend="ray", workers=2), progress=False)
    assert _keys(local) == _keys(on_ray) == [s.key() for s in specs]
    assert _results(local) == _results(on_ray)
    assert worst_case(local) == worst_case(on_ray)
    # the driver wrote every row, once: resuming on either backend finds them all
    assert sorted(_keys(read_rows(tmp_path / "ray" / "runs.jsonl"))) == sorted(s.key() for s in specs)
    again = run_suite(target, specs, tmp_path / "ray", RunnerConfig(backend="ray", workers=1), progress=False)
    assert len(read_rows(tmp_path / "ray" / "runs.jsonl")) == len(specs) and _results(again) == _results(on_ray)


def test_a_run_whose_ray_worker_dies_is_retried_once_then_recorded_as_failed(
    ray_local, locked, digits_permuted, tmp_path, monkeypatch
):
    from trainlock.red_team import backends

    attempts = tmp_path / "attempts"

    def dying(target, spec):  # every attempt leaves a mark, then the worker process dies
        with open(attempts, "a") as f:
            f.write("x")
        os._exit(1)

    monkeypatch.setattr(backends, "_ray_run", dying)
    spec = AttackSpec.of("sgd", 1e-2, max_steps=2, batch_size=32)
    rows = run_suite(
        Target(locked, digits_permuted),
        [spec],
        tmp_path / "out",
        RunnerConfig(backend="ray", workers=1),
        progress=False,
    )
    assert attempts.read_text() == "xx"  # the first try and one retry
    assert len(rows) == 1 and rows[0]["key"] == spec.key() and "failed after one retry" in rows[0]["error"]
    assert read_rows(tmp_path / "out" / "runs.jsonl")[0]["error"] == rows[0]["error"]


def test_runner_config_checks_its_fields():
    with pytest.raises(ValueError, match="backend"):
        RunnerConfig(backend="slurm")
    with pytest.raises(ValueError, match="workers"):
        RunnerConfig(workers=-1)
    with pytest.raises(ValueError, match="gpus_per_run"):
        RunnerConfig(gpus_per_run=-1)


def test_cli_redteam_on_ray_gives_the_local_worst_case(ray_local, locked, digits_permuted, tmp_path):
    p = digits_permuted
    np.savez(
        tmp_path / "perm.npz",
        x_train=p.x_train.numpy(),
        y_train=p.y_train.numpy(),
        x_test=p.x_test.numpy(),
        y_test=p.y_test.numpy(),
    )
    tl.save(locked, tmp_path / "locked", {"task": "digits"})
    common = [
        str(tmp_path / "locked"),
        "--task",
        f"npz:{tmp_path / 'perm.npz'}",
        "--budget",
        "3",
        "--max-steps",
        "10",
        "--batch-size",
        "32",
        "--optimizers",
        "sgd",
        "adam",
    ]
    assert main(["redteam", *common, "--out", str(tmp_path / "local"), "--json", str(tmp_path / "l.json")]) == 0
    assert (
        main(
            [
                "redteam",
                *common,
                "--backend",
                "ray",
                "--workers",
                "2",
                "--out",
                str(tmp_path / "ray"),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    local, on_ray = (json.loads((tmp_path / f).read_text()) for f in ("l.json", "r.json"))
    assert local["worst"]["accuracy"] == on_ray["worst"]["accuracy"]
    assert local["worst"]["attack"] == on_ray["worst"]["attack"]
    assert [r["accuracy"] for r in local["runs"]] == [r["accuracy"] for r in on_ray["runs"]]
