"""Shared Optuna studies: two workers on one PostgreSQL study lose and duplicate no trial (slow tier: starts a
throwaway PostgreSQL cluster in a temp dir, loopback only; `make test-all` installs Debian's postgresql)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import trainlock as tl
from trainlock.red_team import read_rows

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1 for this test; yields its SQLAlchemy URL."""
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make test-all does)")
    root = Path(tempfile.mkdtemp(prefix="trainlock-pg-"))  # not under pytest's root-only directory
    data = root / "data"
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    made = subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], capture_output=True)
    assert made.returncode == 0, made.stderr.decode()[-1000:]
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE trainlock")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/trainlock"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study_without_losing_or_duplicating_a_trial(
    postgres, tiny_base, digits, digits_permuted, tmp_path
):
    import optuna

    p = digits_permuted
    np.savez(
        tmp_path / "perm.npz",
        x_train=p.x_train.numpy(),
        y_train=p.y_train.numpy(),
        x_test=p.x_test.numpy(),
        y_test=p.y_test.numpy(),
    )
    tl.save(tiny_base, tmp_path / "base", {"task": "digits"})
    trials = 8
    cmd = [
        sys.executable,
        "-m",
        "trainlock",
        "redteam",
        str(tmp_path / "base"),
        "--task",
        f"npz:{tmp_path / 'perm.npz'}",
        "--budget",
        "1",
        "--max-steps",
        "5",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--optimizers",
        "sgd",
        "adam",
        "--search-trials",
        str(trials),
        "--storage",
        postgres,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    workers = [
        subprocess.Popen(
            [*cmd, "--out", str(tmp_path / f"w{i}")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for i in range(2)
    ]
    deadline = time.time() + 600
    for w in workers:
        out, _ = w.communicate(timeout=max(1, deadline - time.time()))
        assert w.returncode == 0, out.decode()[-2000:]
    (name,) = optuna.get_all_study_names(postgres)
    study = optuna.load_study(study_name=name, storage=postgres)
    numbers = [t.number for t in study.trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # the study stops at its size; a worker that started a trial just before the other finished may add one
    assert trials <= len(numbers) <= trials + 1 and sorted(numbers) == list(range(len(numbers)))
    ran = [r["trial"] for i in range(2) for r in read_rows(tmp_path / f"w{i}" / "runs.jsonl") if r.get("search")]
    assert sorted(ran) == sorted(numbers)  # each trial ran on exactly one worker: none lost, none twice
    assert all(ran.count(n) == 1 for n in numbers)
    per_worker = [sum(1 for r in read_rows(tmp_path / f"w{i}" / "runs.jsonl") if r.get("search")) for i in range(2)]
    assert all(per_worker), f"one worker ran every trial ({per_worker}): the study was not shared"
